// A real OpenID provider (oidc-provider 9.x) for the end-to-end tests of `mayfly login`.
//
// node provider.mjs ISSUER ID_TOKEN_TTL_SECONDS [WEB_REDIRECT_URI]
//
// Serves on the listening socket handed over as fd 3 (socket activation, as mayfly-sts
// takes its socket), so no other server can take its port between bind and start. One
// public native client, `mayfly-cli`, may use the device authorization grant (RFC 8628)
// and refresh tokens; revocation (RFC 7009) is on. The development interaction pages
// accept any login name (it becomes `sub`) and any password. ID tokens live
// ID_TOKEN_TTL_SECONDS, so a test can watch mayfly refresh one.
//
// With WEB_REDIRECT_URI (the exchange's `/approve/callback`, known only once its port is
// bound) a confidential web client, `mayfly-sts-approvals`, signs approvers in to the
// exchange's approval page with the authorization code flow; its secret comes from the
// environment variable WEB_CLIENT_SECRET.
import http from 'node:http';
import Provider from 'oidc-provider';

const [issuer, idTokenTtl, webRedirectUri] = process.argv.slice(2);
if (!issuer || !idTokenTtl) {
  console.error('usage: node provider.mjs ISSUER ID_TOKEN_TTL_SECONDS [WEB_REDIRECT_URI]');
  process.exit(2);
}
const webClients = [];
if (webRedirectUri) {
  if (!process.env.WEB_CLIENT_SECRET) {
    console.error('WEB_CLIENT_SECRET must be set for the web client');
    process.exit(2);
  }
  webClients.push({
    client_id: 'mayfly-sts-approvals',
    client_secret: process.env.WEB_CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [webRedirectUri],
  });
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'mayfly-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
    ...webClients,
  ],
  features: {
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: true },
  },
  // The email claim in the ID token itself, as many IdPs put it (the spec's default
  // leaves it to the userinfo endpoint when an access token is issued too).
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.test`, email_verified: true };
      },
    };
  },
  ttl: {
    IdToken: Number(idTokenTtl),
    AccessToken: 600,
    DeviceCode: 600,
    RefreshToken: 3600,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
  },
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
});
provider.proxy = false;

const server = http.createServer(provider.callback());
server.listen({ fd: 3 }, () => {
  console.error(`listening on ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
