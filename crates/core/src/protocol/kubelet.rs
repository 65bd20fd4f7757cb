//! The kubelet's image credential provider plugin protocol
//! (`credentialprovider.kubelet.k8s.io/v1`).
//!
//! `mayfly-kubelet-credential` reads a `CredentialProviderRequest` on stdin (`image`, and in
//! service-account-token mode the pod's `serviceAccountToken`) and answers a
//! `CredentialProviderResponse` whose `auth` maps `REGISTRY/REPOSITORY` to a username and a
//! registry token minted for pulling that repository (routes with `tool = "oci"`, operation
//! `read`), cached by the kubelet per image for less than the token's life. An image no
//! route serves gets an empty `auth` and exit 0: the kubelet then pulls it anonymously or
//! with other credentials. Anything malformed is one line on stderr and exit 1.
//!
//! A request that carries a service account token has that token exchanged, not the
//! route's identity: the exchange decides on the pod's own service account. See
//! [`crate::Broker::with_subject`] for how its tokens are cached apart.

use std::io::{Read, Write};

use serde_json::json;

use crate::protocol::{Refusal, Reply};
use crate::{Env, Operation, Process, Target, Tool};

/// The only API version spoken.
pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// Most of stdin read: an image name and a service account token.
const MAX_INPUT: u64 = 64 * 1024;
/// How long before its token expires the kubelet stops reusing an answer, at most.
const EXPIRY_MARGIN: i64 = 60;

/// The `mayfly-kubelet-credential` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "mayfly-kubelet-credential",
    help: r#"The kubelet's image credential provider: reads a CredentialProviderRequest
(credentialprovider.kubelet.k8s.io/v1) on stdin and answers with a registry token minted to
pull that image (routes with tool = "oci"), or an empty `auth` when no route serves it. With
a `serviceAccountToken` in the request, the pod's service account is the subject exchanged.

Wire it in the kubelet's CredentialProviderConfig (--image-credential-provider-config,
with --image-credential-provider-bin-dir naming this binary's directory):
  providers:
    - name: mayfly-kubelet-credential
      apiVersion: credentialprovider.kubelet.k8s.io/v1
      matchImages: ["REGISTRY"]
      defaultCacheDuration: "5m"
"#,
    serve: |args, stdin, stdout, env, ancestry| serve(args, stdin, stdout, env, ancestry),
};

/// Runs one plugin invocation; returns the exit code.
pub fn serve(
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> i32 {
    let answer = handle(args, stdin, env, ancestry, now());
    let answer = match answer {
        Ok(answer) => answer,
        Err(refusal) => match refuse(&refusal) {
            Ok(empty) => empty,
            Err(reply) => return reply.write(stdout),
        },
    };
    let mut line = answer.to_string().into_bytes();
    line.push(b'\n');
    i32::from(stdout.write_all(&line).and_then(|()| stdout.flush()).is_err())
}

/// How the kubelet is answered without a token: an empty `auth` and exit 0 for an image
/// no route serves (the kubelet goes on without these credentials); anything else is one
/// line on stderr and exit 1, which the kubelet logs.
fn refuse(refusal: &Refusal) -> Result<serde_json::Value, Reply> {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => Ok(response(json!({}), 0)),
        Refusal::Refused { .. } | Refusal::Failed(_) | Refusal::Unsupported(_) => Err(Reply::line(refusal.to_string())),
    }
}

/// A `CredentialProviderResponse` for one image. A zero cache duration: the kubelet asks
/// again next time (an empty answer costs nothing, and a new route applies at once).
fn response(auth: serde_json::Value, cache_seconds: i64) -> serde_json::Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Image",
        "cacheDuration": format!("{cache_seconds}s"),
        "auth": auth,
    })
}

/// How long the kubelet may reuse a token that expires at `expires_at`: its remaining
/// life less a minute, or less half of it when that is short; zero when unknown.
fn cache_seconds(expires_at: Option<i64>, now: i64) -> i64 {
    let Some(left) = expires_at.map(|e| e - now) else { return 0 };
    (left - EXPIRY_MARGIN.min(left / 2)).max(0)
}

fn handle(
    args: &[String],
    stdin: &mut dyn Read,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
    now: i64,
) -> Result<serde_json::Value, Refusal> {
    if !args.is_empty() {
        return Err(Refusal::Unsupported(
            "usage: mayfly-kubelet-credential (the kubelet writes the request on stdin; no arguments)".into(),
        ));
    }
    let mut input = Vec::new();
    let read = stdin.take(MAX_INPUT + 1).read_to_end(&mut input);
    if read.is_err() || input.len() as u64 > MAX_INPUT {
        return Err(Refusal::Failed("kubelet credential request: cannot read stdin, or it is too long".into()));
    }
    let request = parse_request(&input)?;
    let mut broker = crate::protocol::broker(env)?;
    // The route decides first: an unrouted image never looks at the token.
    crate::protocol::route(&broker, &request.target)?;
    if let Some(token) = &request.service_account_token {
        broker = broker.with_subject(token).map_err(|e| {
            Refusal::Failed(format!(
                "kubelet credential request refused: `serviceAccountToken`: {}",
                crate::protocol::one_line(&e)
            ))
        })?;
    }
    let route = crate::protocol::route(&broker, &request.target)?;
    let operation = Operation::Read;
    let issued = broker
        .token(route, &request.target, operation, &ancestry())
        .map_err(|e| Refusal::refused(&request.target, operation, crate::protocol::one_line(&e)))?;
    let auth = json!({request.key: {"username": issued.username, "password": issued.token.expose()}});
    Ok(response(auth, cache_seconds(issued.expires_at, now)))
}

/// A request: the route target, the `auth` key the kubelet matches, the pod's token.
struct Request {
    target: Target,
    key: String,
    service_account_token: Option<String>,
}

fn parse_request(input: &[u8]) -> Result<Request, Refusal> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        api_version: String,
        kind: String,
        image: String,
        #[serde(default)]
        service_account_token: Option<String>,
        #[serde(default, rename = "serviceAccountAnnotations")]
        _annotations: Option<std::collections::BTreeMap<String, String>>,
    }
    let malformed = |why: &str| Refusal::Failed(format!("kubelet credential request refused: {why}"));
    let wire: Wire = serde_json::from_slice(input).map_err(|_| {
        malformed("stdin is not a CredentialProviderRequest (JSON with string `apiVersion`, `kind` and `image`)")
    })?;
    if wire.api_version != API_VERSION {
        let why = format!(
            "apiVersion `{}` is not supported (only {API_VERSION})",
            crate::sanitize_for_terminal(&wire.api_version)
        );
        return Err(malformed(&why));
    }
    if wire.kind != "CredentialProviderRequest" {
        let why = format!("kind `{}` is not CredentialProviderRequest", crate::sanitize_for_terminal(&wire.kind));
        return Err(malformed(&why));
    }
    let (registry, repository) =
        parse_image(&wire.image).ok_or_else(|| malformed("`image` is not an image reference"))?;
    // Docker Hub: docker's own name for it is what routes and `docker-credential-mayfly` use.
    let host = if registry == "docker.io" { "index.docker.io" } else { &registry };
    let target = Target::new(Tool::Oci, "https", host, Some(&repository)).map_err(|e| malformed(&e.to_string()))?;
    Ok(Request {
        target,
        key: format!("{registry}/{repository}"),
        service_account_token: wire.service_account_token.filter(|t| !t.is_empty()),
    })
}

/// An image reference's registry and repository, tag and digest dropped, as docker
/// normalises it: a first component with `.` or `:`, or `localhost`, names the registry,
/// else it is Docker Hub (`docker.io`, and `library/` before a one-component name).
fn parse_image(image: &str) -> Option<(String, String)> {
    if image.is_empty() || image.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let name = match image.split_once('@') {
        Some((name, digest)) => {
            let (algorithm, hex) = digest.split_once(':')?;
            if algorithm.is_empty() || hex.is_empty() {
                return None;
            }
            name
        }
        None => image,
    };
    let name = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_ascii_lowercase(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let registry = if registry == "index.docker.io" { "docker.io".to_owned() } else { registry };
    let repository =
        if registry == "docker.io" && !repository.contains('/') { format!("library/{repository}") } else { repository };
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if repository.is_empty() || !repository.chars().all(valid) || repository.split('/').any(str::is_empty) {
        return None;
    }
    Some((registry, repository))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], input: &str) -> (i32, String) {
        crate::protocol::serve_unrouted(&HOOK, args, input.as_bytes())
    }

    fn request(image: &str) -> String {
        json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest", "image": image}).to_string()
    }

    #[test]
    fn unrouted_images_get_an_empty_auth_and_exit_0() {
        let empty = format!("{}\n", response(json!({}), 0));
        for image in ["registry.example.com/team/app:v1", "nginx", "docker.io/library/nginx@sha256:abc"] {
            assert_eq!(run(&[], &request(image)), (0, empty.clone()), "{image}");
        }
        let with_token = json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest",
            "image": "r.example/a", "serviceAccountToken": "not even a JWT", "serviceAccountAnnotations": {"a": "b"}});
        assert_eq!(run(&[], &with_token.to_string()), (0, empty));
        let answer: serde_json::Value = serde_json::from_str(&run(&[], &request("nginx")).1).unwrap();
        assert_eq!(answer["kind"], "CredentialProviderResponse");
        assert_eq!(answer["cacheKeyType"], "Image");
    }

    #[test]
    fn malformed_requests_and_other_versions_fail_with_nothing_on_stdout() {
        for input in [
            String::new(),
            "not json".into(),
            r#"{"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest"}"#.into(),
            r#"{"apiVersion": "credentialprovider.kubelet.k8s.io/v1beta1", "kind": "CredentialProviderRequest", "image": "a"}"#.into(),
            r#"{"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "Pod", "image": "a"}"#.into(),
            request(""),
            request("Registry.example/UPPER/case"),
            request("r.example/a b"),
            request("r.example/a@sha256"),
            request("r.example//a"),
        ] {
            assert_eq!(run(&[], &input), (1, String::new()), "{input:?}");
        }
        assert_eq!(run(&["get"], &request("nginx")), (1, String::new()));
    }

    #[test]
    fn images_name_registry_and_repository_as_docker_does() {
        let cases = [
            ("nginx", "docker.io", "library/nginx"),
            ("nginx:1.27", "docker.io", "library/nginx"),
            ("docker.io/library/nginx", "docker.io", "library/nginx"),
            ("index.docker.io/team/app:v1", "docker.io", "team/app"),
            ("team/app", "docker.io", "team/app"),
            ("localhost/app", "localhost", "app"),
            ("127.0.0.1:5000/test/hello:v1", "127.0.0.1:5000", "test/hello"),
            ("Registry.Example/a/b/c@sha256:0123", "registry.example", "a/b/c"),
            ("r.example:5000/a:tag@sha256:0123", "r.example:5000", "a"),
        ];
        for (image, registry, repository) in cases {
            assert_eq!(parse_image(image), Some((registry.into(), repository.into())), "{image}");
        }
        let hub = parse_request(request("nginx:latest").as_bytes()).ok().unwrap();
        assert_eq!((hub.target.host.as_str(), hub.key.as_str()), ("index.docker.io", "docker.io/library/nginx"));
        assert_eq!(hub.target.path.as_deref(), Some("library/nginx"));
    }

    #[test]
    fn answers_are_cached_for_less_than_the_tokens_life() {
        assert_eq!(cache_seconds(Some(1_000 + 900), 1_000), 840);
        assert_eq!(cache_seconds(Some(1_000 + 60), 1_000), 30);
        assert_eq!(cache_seconds(Some(1_000), 1_000), 0);
        assert_eq!(cache_seconds(Some(900), 1_000), 0);
        assert_eq!(cache_seconds(None, 1_000), 0);
    }

    #[test]
    fn each_refusal_gets_the_answer_the_kubelet_reads() {
        let answers: Vec<Result<serde_json::Value, Reply>> =
            crate::protocol::every_refusal().iter().map(refuse).collect();
        assert_eq!(
            answers,
            [
                Ok(response(json!({}), 0)),
                Ok(response(json!({}), 0)),
                Err(Reply::line("no token for https://h.example/org/app (git write): route `r` does not allow write")),
                Err(Reply::line("the request is malformed")),
                Err(Reply::line("unknown action")),
            ]
        );
    }
}
