'use strict';
// A verdaccio plugin for the end-to-end tests, in two roles.
//
// As the auth plugin (config `auth: mayfly:`) it lets in only tokens minted by one mayfly-sts
// for this registry, or handed out by the trusted-publishing exchange below, and authorises
// each request from the token's scopes:
//   read NAME     `npm:*:read`, `npm:NAME:read` or any `npm:X:publish`
//   publish NAME  `npm:NAME:publish` (also unpublish and dist-tags)
//   an exchanged trusted-publishing token publishes its one package and reads nothing.
// A missing, unverifiable, expired, foreign or revoked token gets 401; a good one without
// the scope gets 403.
//
// As a middleware plugin (config `middlewares: mayfly:`) it serves npm's trusted-publishing
// exchange: `POST /-/npm/v1/oidc/token/exchange/package/<escaped-name>` with a CI ID token
// as Bearer, answered with a short-lived publish token for that one package.
//
// Only node's own modules: nothing to install beyond verdaccio itself.

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');

const LEEWAY_SECS = 5;
const TIMEOUT_MS = 5000;
const TRUSTED_TOKEN_LIFETIME_MS = 15 * 60 * 1000;
const EXCHANGE_PATH = '/-/npm/v1/oidc/token/exchange/package/';
const NOT_FOUND = 'OIDC token exchange error - package not found';

// Exchanged tokens -> { pkg, repository, expires }. Module state, because verdaccio calls
// the factory once per role and both roles need the same tokens.
const trustedTokens = new Map();

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    // verdaccio's error handler answers `err.status` with `{"error": message}`.
    this.status = status;
    this.statusCode = status;
  }
}

const unauthorized = (message) => new HttpError(401, message);
const forbidden = (message) => new HttpError(403, message);

/** A JSON request with node's client; resolves to `{ status, json }` whatever the status. */
function request(url, { method = 'GET', headers = {}, body, ca } = {}) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = { 'https:': https, 'http:': http }[target.protocol];
    if (!client) {
      reject(new Error(`unsupported URL ${url}`));
      return;
    }
    const options = { method, headers: { accept: 'application/json', ...headers }, ca, timeout: TIMEOUT_MS, agent: false };
    const req = client.request(target, options, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        let json;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${target.origin} within ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A JWKS, fetched again when a token names a key it does not have (key rotation). */
class Jwks {
  constructor(url, ca) {
    this.url = url;
    this.ca = ca;
    this.keys = [];
  }

  async find(kid) {
    let jwk = this.keys.find((k) => k.kid === kid);
    if (!jwk) {
      let answer;
      try {
        answer = await request(this.url, { ca: this.ca });
      } catch (err) {
        throw unauthorized(`cannot fetch the JWKS: ${err.message}`);
      }
      if (answer.status !== 200 || !Array.isArray(answer.json?.keys)) {
        throw unauthorized(`cannot fetch the JWKS: HTTP ${answer.status}`);
      }
      this.keys = answer.json.keys;
      jwk = this.keys.find((k) => k.kid === kid);
    }
    if (!jwk) throw unauthorized('token signed by an unknown key');
    return jwk;
  }
}

// The key type each accepted algorithm needs, so a key is never used with another algorithm.
const ALGORITHMS = {
  ES256: { kty: 'EC', crv: 'P-256', dsaEncoding: 'ieee-p1363' },
  RS256: { kty: 'RSA' },
};

/**
 * Verifies a compact JWS against a JWKS and checks `iss`, `aud`, `exp` and `nbf`.
 * Resolves to the claims; rejects with a 401.
 */
async function verifyJwt(token, { jwks, algorithms, issuer, audience }) {
  const parts = token.split('.');
  if (parts.length !== 3) throw unauthorized('token is not a JWT');
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    throw unauthorized('token is not a JWT');
  }
  if (!claims || typeof claims !== 'object') throw unauthorized('token is not a JWT');
  if (!algorithms.includes(header.alg)) throw unauthorized(`token algorithm \`${header.alg}\` is not accepted`);
  if (typeof header.kid !== 'string') throw unauthorized('token has no kid');
  const jwk = await jwks.find(header.kid);
  const expected = ALGORITHMS[header.alg];
  if (jwk.kty !== expected.kty || (expected.crv && jwk.crv !== expected.crv)) {
    throw unauthorized('token algorithm does not match its key');
  }
  let valid = false;
  try {
    const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
    const verifyKey = expected.dsaEncoding ? { key, dsaEncoding: expected.dsaEncoding } : key;
    const input = Buffer.from(`${parts[0]}.${parts[1]}`);
    valid = crypto.verify('sha256', input, verifyKey, Buffer.from(parts[2], 'base64url'));
  } catch {
    valid = false;
  }
  if (!valid) throw unauthorized('token signature does not verify');
  if (claims.iss !== issuer) throw unauthorized('token issuer is wrong');
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(audience)) throw unauthorized('token audience is wrong');
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number') throw unauthorized('token has no exp');
  if (now > claims.exp + LEEWAY_SECS) throw unauthorized('token has expired');
  if (typeof claims.nbf === 'number' && now < claims.nbf - LEEWAY_SECS) throw unauthorized('token is not valid yet');
  return claims;
}

function bearer(req) {
  const value = req.headers.authorization;
  if (typeof value !== 'string') return undefined;
  const [scheme, token, extra] = value.trim().split(/\s+/);
  if (extra !== undefined || !token || scheme.toLowerCase() !== 'bearer') return null;
  return token;
}

/** What a verified token may do, kept on verdaccio's remote user. */
function grantFor(user) {
  return user && user.mayfly;
}

function mayRead(grant, pkg) {
  if (grant.trustedPackage !== undefined) return false;
  return grant.scopes.some(
    (s) => s === 'npm:*:read' || s === `npm:${pkg}:read` || (s.startsWith('npm:') && s.endsWith(':publish')),
  );
}

function mayPublish(grant, pkg) {
  if (grant.trustedPackage !== undefined) return grant.trustedPackage === pkg;
  return grant.scopes.includes(`npm:${pkg}:publish`);
}

/** The plugin; verdaccio calls this once per role with that role's config section. */
module.exports = function mayflyPlugin(config, options) {
  const logger = options.logger;
  const caFile = config.sts_ca_file;
  const ca = caFile ? fs.readFileSync(caFile) : undefined;
  const sts = config.sts_url ? config.sts_url.replace(/\/+$/, '') : undefined;
  const stsJwks = sts ? new Jwks(`${sts}/.well-known/jwks.json`, ca) : undefined;
  const issuer = config.issuer_url ? config.issuer_url.replace(/\/+$/, '') : undefined;
  const issuerJwks = issuer ? new Jwks(`${issuer}/.well-known/jwks.json`) : undefined;

  /** RFC 7662: is this token still active? Skipped when no client is configured. */
  async function active(token) {
    const id = config.introspection_client_id;
    if (!id) return true;
    const basic = Buffer.from(`${id}:${config.introspection_client_secret || ''}`).toString('base64');
    let answer;
    try {
      answer = await request(`${sts}/introspect`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        ca,
      });
    } catch (err) {
      throw unauthorized(`cannot check the token with the exchange: ${err.message}`);
    }
    if (answer.status !== 200 || typeof answer.json?.active !== 'boolean') {
      throw unauthorized(`cannot check the token with the exchange: HTTP ${answer.status}`);
    }
    return answer.json.active;
  }

  /** The remote user for a presented token, or a 401. */
  async function authenticateToken(token, helpers) {
    if (token.startsWith('npm_')) {
      const entry = trustedTokens.get(token);
      if (!entry || entry.expires <= Date.now()) {
        trustedTokens.delete(token);
        throw unauthorized('unknown or expired publish token');
      }
      const user = helpers.createRemoteUser(entry.repository, []);
      user.mayfly = { trustedPackage: entry.pkg, scopes: [] };
      return user;
    }
    if (!sts) throw unauthorized('no exchange is configured');
    const claims = await verifyJwt(token, {
      jwks: stsJwks,
      algorithms: ['ES256'],
      issuer: sts,
      audience: config.audience,
    });
    if (!(await active(token))) throw unauthorized('token has been revoked');
    const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [];
    const user = helpers.createRemoteUser(String(claims.sub || 'mayfly'), []);
    user.mayfly = { scopes };
    return user;
  }

  function allow(action, check) {
    return function (user, pkg, cb) {
      const grant = grantFor(user);
      if (!user || !user.name || !grant) return cb(unauthorized(`authentication required to ${action} ${pkg.name}`));
      if (check(grant, pkg.name)) return cb(null, true);
      logger.warn({ user: user.name, action, pkg: pkg.name }, 'mayfly: @{user} may not @{action} @{pkg}');
      return cb(forbidden(`token does not allow ${action} of ${pkg.name}`));
    };
  }

  async function exchange(req, res) {
    const reply = (status, body) => res.status(status).set('cache-control', 'no-store').json(body);
    try {
      const pkg = req.params.name;
      const token = bearer(req);
      if (!token) return reply(401, { message: 'OIDC token exchange error - an ID token is required as Bearer' });
      if (!issuerJwks) return reply(404, { message: NOT_FOUND });
      let claims;
      try {
        claims = await verifyJwt(token, {
          jwks: issuerJwks,
          algorithms: ['ES256', 'RS256'],
          issuer,
          audience: config.oidc_audience,
        });
      } catch (err) {
        return reply(401, { message: `OIDC token exchange error - ${err.message}` });
      }
      const publishers = Array.isArray(config.trusted_publishers) ? config.trusted_publishers : [];
      const match = publishers.find((p) => p.package === pkg && p.repository === claims.repository);
      if (!match) {
        logger.warn({ pkg, repo: String(claims.repository) }, 'mayfly: no trusted publisher @{repo} for @{pkg}');
        return reply(404, { message: NOT_FOUND });
      }
      const issued = `npm_${crypto.randomBytes(18).toString('hex')}`;
      trustedTokens.set(issued, { pkg, repository: match.repository, expires: Date.now() + TRUSTED_TOKEN_LIFETIME_MS });
      logger.info({ pkg, repo: match.repository }, 'mayfly: trusted publisher @{repo} may publish @{pkg}');
      return reply(201, { token: issued });
    } catch (err) {
      return reply(500, { message: `OIDC token exchange error - ${err.message}` });
    }
  }

  return {
    // Verdaccio asks the first plugin that has it for the API's authentication middleware.
    apiJWTmiddleware(helpers) {
      return function (req, res, next) {
        const anonymous = () => {
          req.remote_user = helpers.createAnonymousRemoteUser();
          res.locals.remote_user = req.remote_user;
        };
        // The exchange's Bearer is a CI ID token, which the exchange itself checks.
        if (req.path.startsWith(EXCHANGE_PATH)) {
          anonymous();
          return next();
        }
        const token = bearer(req);
        anonymous();
        if (token === undefined) return next();
        if (token === null) return next(unauthorized('only Bearer tokens are accepted'));
        req.pause();
        authenticateToken(token, helpers).then(
          (user) => {
            req.remote_user = user;
            res.locals.remote_user = user;
            req.resume();
            next();
          },
          (err) => {
            req.resume();
            logger.warn({ reason: err.message }, 'mayfly: token refused: @{reason}');
            next(err instanceof HttpError ? err : unauthorized(err.message));
          },
        );
      };
    },

    // Every login is refused: the only way in is a token.
    authenticate(_user, _password, cb) {
      cb(unauthorized('log in with a token from mayfly'));
    },

    adduser(_user, _password, cb) {
      cb(forbidden('this registry has no users; use a token from mayfly'));
    },

    allow_access: allow('read', mayRead),
    allow_publish: allow('publish', mayPublish),
    allow_unpublish: allow('unpublish', mayPublish),

    register_middlewares(app) {
      // Express decodes the parameter, so `@scope%2fname` and `@scope%2Fname` both arrive as `@scope/name`.
      app.post(`${EXCHANGE_PATH}:name`, exchange);
    },
  };
};
