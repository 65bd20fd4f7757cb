//! What an intercepted request asks for: the operation, and the package or repository
//! its token is bound to, read from the request the way each tool's protocol spells it.
//!
//! The target is the one the tool's own helper or shim would compute for the same
//! request: git names the repository; npm and twine name the package only when they
//! publish (installs are registry-wide); cargo names the crate except for reads. Nothing
//! here widens a target: a request whose package cannot be read exactly is refused.

use hyper::Method;
use mayfly_core::{Operation, Tool};

/// The protocol family the proxy reads a route's requests with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// git smart HTTP.
    Git,
    /// The npm registry API (npm, pnpm, yarn).
    Npm,
    /// cargo's sparse index and web API.
    Cargo,
    /// PyPI's upload API and simple index.
    Pypi,
    /// A plain REST API: `GET`/`HEAD` read, anything else writes.
    Rest,
    /// An OCI registry (the distribution API), whose token challenge the proxy answers.
    Oci,
    /// A NuGet gallery: the key goes into a push's `X-NuGet-ApiKey`.
    Nuget,
}

impl Family {
    /// The family a route's tool is read with; `None` for tools the proxy passes through
    /// (AWS signs requests itself).
    pub(crate) fn of(tool: Tool) -> Option<Self> {
        match tool {
            Tool::Git => Some(Self::Git),
            Tool::Npm => Some(Self::Npm),
            Tool::Cargo => Some(Self::Cargo),
            Tool::Pypi => Some(Self::Pypi),
            Tool::Kubectl | Tool::Terraform => Some(Self::Rest),
            Tool::Oci => Some(Self::Oci),
            Tool::Nuget => Some(Self::Nuget),
            _ => None,
        }
    }
}

/// What a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// The registry as a whole (the host).
    Host,
    /// One repository or package, as the tool's helper names it.
    Named(String),
    /// One package, named in the request's body.
    InBody(BodyName),
}

/// Where in a body the package is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyName {
    /// `cargo publish`: a little-endian length, then JSON metadata with `name`.
    CargoPublish,
    /// `twine upload`: a multipart form with a `name` field.
    PypiUpload,
}

/// An intercepted request's operation and subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Detected {
    pub operation: Operation,
    pub subject: Subject,
}

fn reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// Reads a request of `family`: its operation and subject, or why it is refused.
pub(crate) fn detect(family: Family, method: &Method, path: &str, query: Option<&str>) -> Result<Detected, String> {
    match family {
        Family::Git => Ok(git(method, path, query)),
        Family::Npm => npm(method, path),
        Family::Cargo => cargo(method, path),
        Family::Pypi => pypi(method, path),
        Family::Nuget => super::nuget::detect(method, path),
        Family::Rest => {
            let operation = if reads(method) { Operation::Read } else { Operation::Write };
            Ok(Detected { operation, subject: Subject::Host })
        }
        Family::Oci => Ok(match oci(method, path, query)? {
            OciRequest::Base => Detected { operation: Operation::Read, subject: Subject::Host },
            OciRequest::Repository { name, operation, .. } => Detected { operation, subject: Subject::Named(name) },
        }),
    }
}

/// A request of the distribution API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OciRequest {
    /// `GET /v2/`: the API's version check, which names no repository.
    Base,
    /// A request on one repository: pull (read) or push (write); a cross-repository blob
    /// mount also pulls from `mount_from`.
    Repository { name: String, operation: Operation, mount_from: Option<String> },
}

/// A repository name as the distribution spec writes it
/// ([`mayfly_core::scope::is_oci_repository_name`]), or why not, for the 403 line.
pub(crate) fn repository_name(name: &str) -> Result<String, String> {
    if !mayfly_core::scope::is_oci_repository_name(name) {
        return Err(format!(
            "`{}` is not an OCI repository name",
            mayfly_core::sanitize_for_terminal(&name.chars().take(80).collect::<String>())
        ));
    }
    Ok(name.to_owned())
}

/// The distribution API: `GET`/`HEAD` of manifests, blobs, tags and referrers pull;
/// `POST`/`PUT`/`PATCH`/`DELETE` of manifests and blobs (and every request on an upload)
/// push. A `mount=` upload with `from=` also pulls from that repository. Everything else
/// (the catalog, unknown endpoints) is refused: it names no repository a token can be
/// bound to.
pub(crate) fn oci(method: &Method, path: &str, query: Option<&str>) -> Result<OciRequest, String> {
    let refuse = || {
        format!(
            "`{method} {}` is not a registry request mayfly adds a token to",
            mayfly_core::sanitize_for_terminal(&path.chars().take(120).collect::<String>())
        )
    };
    if path == "/v2/" || path == "/v2" {
        return if reads(method) { Ok(OciRequest::Base) } else { Err(refuse()) };
    }
    let rest = path.strip_prefix("/v2/").ok_or_else(refuse)?;
    // The repository is everything before the last endpoint segment: names may hold
    // `blobs` or `manifests` as components themselves.
    let (name, endpoint, tail) =
        ["/manifests/", "/blobs/uploads/", "/blobs/uploads", "/blobs/", "/tags/", "/referrers/"]
            .iter()
            .filter_map(|e| rest.rfind(e).map(|i| (i, *e)))
            .max_by_key(|(i, e)| (*i, e.len()))
            .map(|(i, e)| (&rest[..i], e, &rest[i + e.len()..]))
            .ok_or_else(refuse)?;
    let name = repository_name(name)?;
    let reference_ok = |tail: &str| {
        !tail.is_empty() && tail.len() <= 256 && tail.chars().all(|c| c.is_ascii_alphanumeric() || "._-:+".contains(c))
    };
    let push = |mount_from| Ok(OciRequest::Repository { name: name.clone(), operation: Operation::Write, mount_from });
    let pull = || Ok(OciRequest::Repository { name: name.clone(), operation: Operation::Read, mount_from: None });
    match endpoint {
        "/manifests/" | "/blobs/" if !reference_ok(tail) => Err(refuse()),
        "/manifests/" | "/blobs/" if reads(method) => pull(),
        "/manifests/" if matches!(*method, Method::PUT | Method::DELETE) => push(None),
        "/blobs/" if *method == Method::DELETE => push(None),
        "/blobs/uploads/" | "/blobs/uploads" if tail.is_empty() && *method == Method::POST => {
            let pairs: Vec<(String, String)> =
                url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
            let from: Vec<&str> = pairs.iter().filter(|(k, _)| k == "from").map(|(_, v)| v.as_str()).collect();
            let mounts = pairs.iter().any(|(k, _)| k == "mount");
            match (mounts, from.as_slice()) {
                (_, []) => push(None),
                (true, [from]) => push(Some(repository_name(from)?)),
                _ => Err(refuse()),
            }
        }
        "/blobs/uploads/"
            if reference_ok(tail) && matches!(*method, Method::GET | Method::PATCH | Method::PUT | Method::DELETE) =>
        {
            push(None)
        }
        "/tags/" if tail == "list" && reads(method) => pull(),
        "/referrers/" if reference_ok(tail) && reads(method) => pull(),
        _ => Err(refuse()),
    }
}

/// git smart HTTP: `git-receive-pack` writes, everything else reads; the repository is the
/// path before the service.
fn git(method: &Method, path: &str, query: Option<&str>) -> Detected {
    let service = query.unwrap_or_default().split('&').find_map(|p| p.strip_prefix("service="));
    for suffix in ["/info/refs", "/git-upload-pack", "/git-receive-pack"] {
        if let Some(repo) = path.strip_suffix(suffix) {
            let write = suffix == "/git-receive-pack" || service == Some("git-receive-pack");
            let operation = if write { Operation::Write } else { Operation::Read };
            return Detected { operation, subject: Subject::Named(repo.to_owned()) };
        }
    }
    let operation = if reads(method) { Operation::Read } else { Operation::Write };
    Detected { operation, subject: Subject::Named(path.to_owned()) }
}

/// One path segment percent-decoded exactly once; `None` when it is not UTF-8.
fn decode_once(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A package name from the path's leading segments (`pkg`, `@scope%2fpkg` or
/// `@scope/pkg`), decoded once; refused when a part holds a separator or an escape after
/// decoding.
fn npm_package<'a>(mut segments: impl Iterator<Item = &'a str>) -> Result<String, String> {
    let refuse = |s: &str| format!("`{}` is not an npm package name", mayfly_core::sanitize_for_terminal(s));
    let first = segments.next().filter(|s| !s.is_empty()).ok_or_else(|| "the request names no package".to_owned())?;
    let decoded = decode_once(first).ok_or_else(|| refuse(first))?;
    let (scope, name) = match decoded.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, name)) => (Some(scope.to_owned()), name.to_owned()),
            None => {
                let next = segments.next().ok_or_else(|| refuse(first))?;
                (Some(scoped.to_owned()), decode_once(next).ok_or_else(|| refuse(next))?)
            }
        },
        None => (None, decoded.clone()),
    };
    let bad = |part: &str| {
        part.is_empty()
            || part == "."
            || part == ".."
            || part.chars().any(|c| c.is_control() || c.is_whitespace() || "/\\%?#@:".contains(c))
    };
    if scope.as_deref().is_some_and(bad) || bad(&name) {
        return Err(refuse(&decoded));
    }
    Ok(match scope {
        Some(scope) => format!("@{scope}/{name}"),
        None => name,
    })
}

/// The npm registry: reads are registry-wide (as the shim's installs); `PUT`/`DELETE` of
/// a package document, its dist-tags or access publish that package.
fn npm(method: &Method, path: &str) -> Result<Detected, String> {
    if reads(method) {
        return Ok(Detected { operation: Operation::Read, subject: Subject::Host });
    }
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut segments = rest.split('/');
    let package = match rest.strip_prefix("-/") {
        Some(special) => {
            if let Some(package) = special.strip_prefix("package/") {
                npm_package(package.split('/'))?
            } else if special.starts_with("npm/v1/security/") && *method == Method::POST {
                // `npm audit` posts the dependency tree: a read.
                return Ok(Detected { operation: Operation::Read, subject: Subject::Host });
            } else {
                return Err(format!(
                    "`{method} /-/{}` is not a registry operation mayfly adds a token to",
                    mayfly_core::sanitize_for_terminal(special.split('/').next().unwrap_or_default())
                ));
            }
        }
        None => npm_package(&mut segments)?,
    };
    Ok(Detected { operation: Operation::Publish, subject: Subject::Named(package) })
}

/// A crate name as crates.io allows it.
fn crate_name(name: &str) -> Result<String, String> {
    let good =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if good {
        Ok(name.to_owned())
    } else {
        Err(format!("`{}` is not a crate name", mayfly_core::sanitize_for_terminal(name)))
    }
}

/// cargo: reads (index, downloads) are registry-wide, as cargo's provider asks for them;
/// `PUT /api/v1/crates/new` publishes the crate its body names; `yank`/`unyank` and
/// `owners` name the crate in the path.
fn cargo(method: &Method, path: &str) -> Result<Detected, String> {
    let api = path.find("/api/v1/crates/").map(|i| &path[i + "/api/v1/crates/".len()..]);
    let Some(api) = api else {
        return if reads(method) {
            Ok(Detected { operation: Operation::Read, subject: Subject::Host })
        } else {
            Err(format!("`{method}` outside cargo's publish API is not a registry operation mayfly adds a token to"))
        };
    };
    let segments: Vec<&str> = api.split('/').collect();
    let detected = |operation, name: &str| Ok(Detected { operation, subject: Subject::Named(crate_name(name)?) });
    match (method, segments.as_slice()) {
        (&Method::PUT, ["new"]) => {
            Ok(Detected { operation: Operation::Publish, subject: Subject::InBody(BodyName::CargoPublish) })
        }
        (&Method::DELETE, [name, _, "yank"]) | (&Method::PUT, [name, _, "unyank"]) => detected(Operation::Yank, name),
        (_, [name, "owners"]) => detected(Operation::Owners, name),
        _ if reads(method) => Ok(Detected { operation: Operation::Read, subject: Subject::Host }),
        _ => Err(format!("`{method}` of cargo's API is not a registry operation mayfly adds a token to")),
    }
}

/// PyPI: a `POST` uploads (publishes) the project its form names; reads name the project
/// of the simple index page (`.../simple/<project>/`) or of the distribution file (a
/// wheel's or sdist's name, wherever the index keeps its files), PEP 503-normalised.
fn pypi(method: &Method, path: &str) -> Result<Detected, String> {
    if *method == Method::POST {
        return Ok(Detected { operation: Operation::Publish, subject: Subject::InBody(BodyName::PypiUpload) });
    }
    if !reads(method) {
        return Err(format!("`{method}` of a Python index is not an operation mayfly adds a token to"));
    }
    let project = pypi_project(path).ok_or_else(|| {
        format!(
            "`{}` names no one project of a Python index (`/simple/<project>/`, or a distribution file of that project)",
            mayfly_core::sanitize_for_terminal(path)
        )
    })?;
    Ok(Detected { operation: Operation::Read, subject: Subject::Named(project) })
}

/// The project a read of a simple index names: a distribution file's (the last segment,
/// optionally with PEP 658's `.metadata`), else the segment after the last `simple`.
fn pypi_project(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let file = file_project(segments.last()?)?;
    let after_simple = segments.iter().rposition(|s| *s == "simple").map_or(&[][..], |at| &segments[at + 1..]);
    match (after_simple, file) {
        ([project] | [project, ""], None) => pep503(&decode_once(project)?),
        (_, None) => None,
        // A file under `simple/<project>/` must be that project's: in
        // `simple/secret/allowed-1.0.tar.gz` the two disagree, and it is refused.
        ([project, _, ..], Some(named)) => (pep503(&decode_once(project)?)? == named).then_some(named),
        (_, Some(named)) => Some(named),
    }
}

/// The project a distribution file names: `Some(None)` when the segment is no distribution
/// file, `None` when it is one but names no project.
fn file_project(segment: &str) -> Option<Option<String>> {
    let last = decode_once(segment)?;
    let file = last.strip_suffix(".metadata").unwrap_or(&last);
    if let Some(stem) = file.strip_suffix(".whl") {
        // `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`, `-` in the name as `_`.
        let parts: Vec<&str> = stem.split('-').collect();
        return if (5..=6).contains(&parts.len()) { pep503(parts[0]).map(Some) } else { None };
    }
    for extension in [".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz"] {
        if let Some(stem) = file.strip_suffix(extension) {
            // `{name}-{version}`: the version is after the last `-` and starts with a digit.
            let (name, version) = stem.rsplit_once('-')?;
            return if version.starts_with(|c: char| c.is_ascii_digit()) { pep503(name).map(Some) } else { None };
        }
    }
    Some(None)
}

/// The package a body names, as the tool's shim or provider names it.
pub(crate) fn name_in_body(kind: BodyName, content_type: Option<&str>, body: &[u8]) -> Result<String, String> {
    match kind {
        BodyName::CargoPublish => {
            let invalid = || "the publish request's metadata is not what cargo sends".to_owned();
            let length = body.get(..4).ok_or_else(invalid)?;
            let length = u32::from_le_bytes(length.try_into().map_err(|_| invalid())?) as usize;
            let json = body.get(4..4 + length).ok_or_else(invalid)?;
            let metadata: serde_json::Value = serde_json::from_slice(json).map_err(|_| invalid())?;
            crate_name(metadata["name"].as_str().ok_or_else(invalid)?)
        }
        BodyName::PypiUpload => {
            let invalid = || "the upload is not a form with one `name`".to_owned();
            let boundary = content_type
                .and_then(|t| t.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
                .map(|b| b.trim_matches('"'))
                .filter(|b| !b.is_empty())
                .ok_or_else(invalid)?;
            let delimiter = format!("--{boundary}");
            let text = String::from_utf8_lossy(body);
            let mut names = text.split(delimiter.as_str()).filter_map(|part| {
                let (head, value) = part.split_once("\r\n\r\n")?;
                let named = head
                    .lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("content-disposition:") && l.contains("name=\"name\""));
                named.then(|| value.strip_suffix("\r\n").unwrap_or(value).to_owned())
            });
            let name = names.next().ok_or_else(invalid)?;
            if names.next().is_some() {
                return Err(invalid());
            }
            pep503(&name).ok_or_else(invalid)
        }
    }
}

/// A project name normalised as PEP 503 (and the twine shim) does: `Foo_Bar` is `foo-bar`.
/// `None` for what is not a project name (PEP 508: letters, digits, `-_.`, starting and
/// ending with a letter or digit).
fn pep503(name: &str) -> Option<String> {
    let edges =
        name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !edges || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return None;
    }
    let mut out = String::new();
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(operation: Operation, name: &str) -> Result<Detected, String> {
        Ok(Detected { operation, subject: Subject::Named(name.into()) })
    }

    fn host(operation: Operation) -> Result<Detected, String> {
        Ok(Detected { operation, subject: Subject::Host })
    }

    #[test]
    fn git_requests_name_their_repository_and_operation() {
        let git = |method, path, query| detect(Family::Git, &method, path, query);
        assert_eq!(
            git(Method::GET, "/org/app.git/info/refs", Some("service=git-upload-pack")),
            named(Operation::Read, "/org/app.git")
        );
        assert_eq!(
            git(Method::GET, "/org/app.git/info/refs", Some("service=git-receive-pack")),
            named(Operation::Write, "/org/app.git")
        );
        assert_eq!(git(Method::POST, "/org/app.git/git-upload-pack", None), named(Operation::Read, "/org/app.git"));
        assert_eq!(git(Method::POST, "/org/app.git/git-receive-pack", None), named(Operation::Write, "/org/app.git"));
    }

    #[test]
    fn npm_publishes_name_the_package_decoded_once() {
        let npm = |method, path| detect(Family::Npm, &method, path, None);
        assert_eq!(npm(Method::GET, "/@org%2fapp"), host(Operation::Read));
        assert_eq!(npm(Method::GET, "/app/-/app-1.0.0.tgz"), host(Operation::Read));
        assert_eq!(npm(Method::PUT, "/app"), named(Operation::Publish, "app"));
        assert_eq!(npm(Method::PUT, "/@org%2fapp"), named(Operation::Publish, "@org/app"));
        assert_eq!(npm(Method::PUT, "/@org%2Fapp"), named(Operation::Publish, "@org/app"));
        assert_eq!(npm(Method::PUT, "/@org/app"), named(Operation::Publish, "@org/app"));
        assert_eq!(npm(Method::DELETE, "/app/-rev/3-abc"), named(Operation::Publish, "app"));
        assert_eq!(npm(Method::PUT, "/-/package/@org%2fapp/dist-tags/next"), named(Operation::Publish, "@org/app"));
        assert_eq!(npm(Method::POST, "/-/npm/v1/security/advisories/bulk"), host(Operation::Read));
        // A second encoding, a separator or a traversal after decoding: refused.
        for path in [
            "/@org%252fapp",
            "/@org%2fa%2fb",
            "/app%2fother",
            "/@org%2f..",
            "/..",
            "/a%5cb",
            "/@org%2f",
            "/%40org%2fapp%2F",
            "/",
            "/-/user/org.couchdb.user:me",
            "/%zz",
        ] {
            assert!(npm(Method::PUT, path).is_err(), "{path}");
        }
    }

    #[test]
    fn cargo_operations_follow_its_provider() {
        let cargo = |method, path| detect(Family::Cargo, &method, path, None);
        assert_eq!(cargo(Method::GET, "/index/config.json"), host(Operation::Read));
        assert_eq!(cargo(Method::GET, "/index/3/s/serde"), host(Operation::Read));
        assert_eq!(cargo(Method::GET, "/api/v1/crates/serde/1.0.0/download"), host(Operation::Read));
        assert_eq!(
            cargo(Method::PUT, "/api/v1/crates/new"),
            Ok(Detected { operation: Operation::Publish, subject: Subject::InBody(BodyName::CargoPublish) })
        );
        assert_eq!(cargo(Method::DELETE, "/api/v1/crates/demo/1.0.0/yank"), named(Operation::Yank, "demo"));
        assert_eq!(cargo(Method::PUT, "/api/v1/crates/demo/1.0.0/unyank"), named(Operation::Yank, "demo"));
        assert_eq!(cargo(Method::PUT, "/api/v1/crates/demo/owners"), named(Operation::Owners, "demo"));
        assert_eq!(cargo(Method::GET, "/api/v1/crates/demo/owners"), named(Operation::Owners, "demo"));
        assert!(cargo(Method::DELETE, "/api/v1/crates/de%2fmo/1.0.0/yank").is_err());
        assert!(cargo(Method::POST, "/index/config.json").is_err());
        assert!(cargo(Method::PUT, "/api/v1/crates/demo").is_err());
    }

    #[test]
    fn pypi_uploads_and_rest_calls_go_by_method() {
        let pypi = |method, path| detect(Family::Pypi, &method, path, None);
        assert_eq!(pypi(Method::GET, "/simple/demo/"), named(Operation::Read, "demo"));
        assert_eq!(pypi(Method::GET, "/api/pypi/repo/simple/My_Pkg"), named(Operation::Read, "my-pkg"));
        assert_eq!(pypi(Method::GET, "/packages/my_pkg-1.0.0-py3-none-any.whl"), named(Operation::Read, "my-pkg"));
        assert_eq!(
            pypi(Method::HEAD, "/f/ab/cd/my_pkg-1.0.0-1-py3-none-any.whl.metadata"),
            named(Operation::Read, "my-pkg")
        );
        assert_eq!(pypi(Method::GET, "/simple/my-pkg/my.pkg-2.0rc1.tar.gz"), named(Operation::Read, "my-pkg"));
        assert_eq!(pypi(Method::GET, "/packages/demo-1.0%2Blocal.zip"), named(Operation::Read, "demo"));
        // A read that names no project, or not exactly one: refused, never the whole index.
        for path in [
            "/simple/",
            "/",
            "/simple/a/b/",
            "/simple/a%2fb/",
            "/simple/%252e%252e/",
            "/packages/demo.tar.gz",
            "/packages/demo-x.tar.gz",
            "/packages/demo-1.0.whl",
            "/pypi/demo/json",
            "/simple/../",
            "/simple/-demo/",
        ] {
            assert!(pypi(Method::GET, path).is_err(), "{path}");
        }
        assert!(pypi(Method::DELETE, "/simple/demo/").is_err());
        // A file under `simple/<project>/` is that project's, or refused.
        assert_eq!(pypi(Method::GET, "/simple/My.Pkg/my_pkg-1.0-py3-none-any.whl"), named(Operation::Read, "my-pkg"));
        for mismatched in [
            "/simple/secret/allowed-1.0.tar.gz",
            "/simple/secret/allowed-1.0-py3-none-any.whl",
            "/simple/secret/allowed-1.0.tar.gz.metadata",
            "/api/pypi/repo/simple/secret/sub/allowed-1.0.zip",
        ] {
            assert!(pypi(Method::GET, mismatched).is_err(), "{mismatched}");
        }
        assert_eq!(
            detect(Family::Pypi, &Method::POST, "/legacy/", None),
            Ok(Detected { operation: Operation::Publish, subject: Subject::InBody(BodyName::PypiUpload) })
        );
        assert_eq!(detect(Family::Rest, &Method::HEAD, "/v1/x", None), host(Operation::Read));
        assert_eq!(detect(Family::Rest, &Method::PATCH, "/v1/x", None), host(Operation::Write));
        assert_eq!(Family::of(Tool::Oci), Some(Family::Oci));
        assert_eq!(Family::of(Tool::Aws), None);
    }

    #[test]
    fn bodies_name_one_package() {
        let metadata = br#"{"name":"demo","vers":"1.0.0"}"#;
        let mut body = (metadata.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(metadata);
        body.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(name_in_body(BodyName::CargoPublish, None, &body), Ok("demo".into()));
        assert!(name_in_body(BodyName::CargoPublish, None, &body[..10]).is_err());

        let form = "--xx\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload\r\n--xx\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nMy_Pkg\r\n--xx--\r\n";
        let kind = Some("multipart/form-data; boundary=xx");
        assert_eq!(name_in_body(BodyName::PypiUpload, kind, form.as_bytes()), Ok("my-pkg".into()));
        let twice =
            form.replace("--xx--", "--xx\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nother\r\n--xx--");
        assert!(name_in_body(BodyName::PypiUpload, kind, twice.as_bytes()).is_err());
        assert!(name_in_body(BodyName::PypiUpload, None, form.as_bytes()).is_err());
    }

    #[test]
    fn oci_requests_name_their_repository_and_operation() {
        let oci = |method, path, query| oci(&method, path, query);
        let repo = |name: &str, operation, from: Option<&str>| {
            Ok(OciRequest::Repository { name: name.into(), operation, mount_from: from.map(Into::into) })
        };
        assert_eq!(oci(Method::GET, "/v2/", None), Ok(OciRequest::Base));
        assert_eq!(oci(Method::GET, "/v2/test/hello/manifests/v1", None), repo("test/hello", Operation::Read, None));
        assert_eq!(
            oci(Method::HEAD, "/v2/test/hello/blobs/sha256:ab12", None),
            repo("test/hello", Operation::Read, None)
        );
        assert_eq!(oci(Method::GET, "/v2/a/b/c/tags/list", Some("n=10")), repo("a/b/c", Operation::Read, None));
        assert_eq!(
            oci(Method::GET, "/v2/test/hello/referrers/sha256:ab", None),
            repo("test/hello", Operation::Read, None)
        );
        assert_eq!(oci(Method::PUT, "/v2/test/hello/manifests/v1", None), repo("test/hello", Operation::Write, None));
        assert_eq!(
            oci(Method::DELETE, "/v2/test/hello/manifests/sha256:ab", None),
            repo("test/hello", Operation::Write, None)
        );
        assert_eq!(
            oci(Method::POST, "/v2/test/hello/blobs/uploads/", None),
            repo("test/hello", Operation::Write, None)
        );
        assert_eq!(
            oci(Method::PATCH, "/v2/test/hello/blobs/uploads/0f3e-aa", Some("_state=x")),
            repo("test/hello", Operation::Write, None)
        );
        assert_eq!(
            oci(Method::PUT, "/v2/test/hello/blobs/uploads/0f3e-aa", Some("digest=sha256%3Aab")),
            repo("test/hello", Operation::Write, None)
        );
        // A repository may be called `blobs` or `manifests`: the last endpoint counts.
        assert_eq!(oci(Method::GET, "/v2/org/blobs/manifests/v1", None), repo("org/blobs", Operation::Read, None));
        assert_eq!(
            oci(Method::POST, "/v2/test/copy/blobs/uploads/", Some("mount=sha256%3Aab&from=test%2Fhello")),
            repo("test/copy", Operation::Write, Some("test/hello"))
        );
        // A `GET` of a manifest still pulls, whatever its query says.
        assert_eq!(
            oci(Method::GET, "/v2/test/hello/manifests/v1", Some("from=other")),
            repo("test/hello", Operation::Read, None)
        );
        let long = format!("/v2/{}/manifests/v1", "a".repeat(256));
        for (method, path, query) in [
            (Method::GET, "/v2/_catalog", None),
            (Method::GET, "/v2/../secret/manifests/v1", None),
            (Method::GET, "/v2/test/../other/manifests/v1", None),
            (Method::GET, "/v2/test%2fhello/manifests/v1", None),
            (Method::GET, "/v2/test%2Fhello/manifests/v1", None),
            (Method::GET, "/v2/Test/Hello/manifests/v1", None),
            (Method::GET, "/v2//hello/manifests/v1", None),
            (Method::GET, "/v2/test/hello/manifests/", None),
            (Method::GET, "/v2/test/hello/manifests/v1/../../x", None),
            (Method::GET, long.as_str(), None),
            (Method::POST, "/v2/test/hello/manifests/v1", None),
            (Method::PUT, "/v2/test/hello/blobs/sha256:ab", None),
            (Method::POST, "/v2/", None),
            (Method::GET, "/v1/test/hello/manifests/v1", None),
            (Method::POST, "/v2/test/copy/blobs/uploads/", Some("mount=sha256%3Aab&from=..%2Fx")),
            (Method::POST, "/v2/test/copy/blobs/uploads/", Some("mount=sha256%3Aab&from=Test%2Fhello")),
            (Method::POST, "/v2/test/copy/blobs/uploads/", Some("mount=sha256%3Aab&from=test%252Fhello")),
            (Method::POST, "/v2/test/copy/blobs/uploads/", Some("mount=d&from=test%2Fa&from=other%2Fb")),
            (Method::POST, "/v2/test/copy/blobs/uploads/", Some("from=test%2Fa")),
        ] {
            assert!(oci(method.clone(), path, query).is_err(), "{method} {path} {query:?}");
        }
        assert!(repository_name(&"a".repeat(255)).is_ok());
        for bad in ["a..b", "a/./b", "-a", "a-", "a___b", "a b", "a\\b", "", "a//b"] {
            assert!(repository_name(bad).is_err(), "{bad}");
        }
        assert!(repository_name("a__b.c-d---e/f").is_ok());
    }
}
