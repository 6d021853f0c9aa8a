//! Image references, checked as the kubelet reads one before it pulls:
//! distribution/reference's grammar (`ParseNormalizedNamed`) and the
//! digests its runtimes know. The API server takes any string without
//! spaces, so a reference this refuses would be applied, and fail on
//! the node (InvalidImageName).
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path
//! domain     := host [ ":" port ]        host: DNS-like parts joined by ".", or [IPv6]
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := ( "sha256" | "sha384" | "sha512" ) ":" lowercase hex of its length
//! ```
//!
//! The first part is the registry only when it has a `.` or a `:`, is
//! `localhost`, or has a capital letter (`nginx/x` is Docker Hub's
//! `nginx/x`); without one, the path is Docker Hub's (`library/` before
//! a one-part path), and at most 255 characters long.

use std::fmt;
use std::str::FromStr;

/// What a help shows of the grammar, with references that follow it.
pub const SHAPE: &str = "an image reference is [REGISTRY[:PORT]/]REPOSITORY[:TAG][@DIGEST], the repository in lowercase: \
     docker.io/library/nginx:1.27, or registry.example.com:5000/team/app@sha256:<64 hex digits>";

/// The longest repository path (the name without its registry).
pub const MAX_PATH: usize = 255;
/// The longest tag.
pub const MAX_TAG: usize = 128;

/// An image reference the kubelet can parse; the only way to get one is
/// `parse`, so what holds one needs no check. Written as given (the
/// kubelet fills in `docker.io/library/` and `:latest`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef(String);

/// What is wrong with a reference, naming the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReference {
    #[error("it is empty")]
    Empty,
    #[error("it has a space or a control character")]
    Space,
    #[error("it is 64 hexadecimal digits, an image's id, where a name is needed")]
    Identifier,
    #[error("it names no repository")]
    NoRepository,
    #[error(
        "the registry `{0}` is not a host name (letters, digits and inner `-`, in parts joined by `.`) nor an IPv6 address in brackets"
    )]
    Host(String),
    #[error("the registry's port `{0}` is not a port number (1 to 65535)")]
    Port(String),
    #[error("the repository `{written}` has capital letters, and a repository is lowercase (`{lower}`)")]
    Uppercase { written: String, lower: String },
    #[error("the repository `{0}` has an empty part (`//`, or a `/` at an end)")]
    EmptyComponent(String),
    #[error(
        "`{0}` is not a repository part: lowercase letters and digits, joined by one `.`, one or two `_`, or `-`s, and neither starting nor ending with one"
    )]
    Component(String),
    #[error(
        "the repository path is {0} characters long (with Docker Hub's `library/` where it applies); at most {MAX_PATH}"
    )]
    TooLong(usize),
    #[error(
        "the tag `{0}` is not a tag: 1 to {MAX_TAG} letters, digits, `_`, `.` and `-`, not starting with `.` or `-` (one `:` before it, none in it)"
    )]
    Tag(String),
    #[error("the digest `{0}` is not ALGORITHM:HEX")]
    DigestFormat(String),
    #[error("the digest's algorithm `{0}` is none of sha256, sha384 and sha512, those a runtime can check")]
    DigestAlgorithm(String),
    #[error("a {algorithm} digest is {digits} lowercase hexadecimal digits, and `{hex}` is not")]
    DigestHex { algorithm: &'static str, digits: usize, hex: String },
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, BadReference> {
        check(s)?;
        Ok(ImageRef(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageRef {
    type Err = BadReference;
    fn from_str(s: &str) -> Result<Self, BadReference> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check(s: &str) -> Result<(), BadReference> {
    if s.is_empty() {
        return Err(BadReference::Empty);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BadReference::Space);
    }
    if s.len() == 64 && s.bytes().all(is_lower_hex) {
        return Err(BadReference::Identifier);
    }
    // A digest holds no `@`, a name no `@` either.
    let (name, digest) = match s.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (s, None),
    };
    let (domain, rest) = split_domain(name);
    // A path holds no `:`: the first one after the registry starts the tag.
    let (path, tag) = match rest.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (rest, None),
    };
    if let Some(domain) = domain {
        check_domain(domain)?;
    }
    if path.is_empty() {
        return Err(BadReference::NoRepository);
    }
    if path.chars().any(char::is_uppercase) {
        return Err(BadReference::Uppercase { written: path.to_owned(), lower: path.to_lowercase() });
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(BadReference::EmptyComponent(path.to_owned()));
        }
        if !is_path_component(component) {
            return Err(BadReference::Component(component.to_owned()));
        }
    }
    let docker_hub = domain.is_none_or(|d| d == "docker.io" || d == "index.docker.io");
    let length = path.len() + if docker_hub && !path.contains('/') { "library/".len() } else { 0 };
    if length > MAX_PATH {
        return Err(BadReference::TooLong(length));
    }
    if let Some(tag) = tag.filter(|t| !is_tag(t)) {
        return Err(BadReference::Tag(tag.to_owned()));
    }
    match digest {
        Some(digest) => check_digest(digest),
        None => Ok(()),
    }
}

/// The registry and the rest, as the kubelet tells them apart.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first == "localhost" || first.contains(['.', ':']) || first.chars().any(char::is_uppercase) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_domain(domain: &str) -> Result<(), BadReference> {
    let bad_host = || BadReference::Host(domain.to_owned());
    let port = match domain.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']').ok_or_else(bad_host)?;
            if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                return Err(bad_host());
            }
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad_host)?),
            }
        }
        None => {
            let (host, port) = match domain.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (domain, None),
            };
            if !host.split('.').all(is_host_part) {
                return Err(bad_host());
            }
            port
        }
    };
    match port {
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) || !p.parse::<u16>().is_ok_and(|n| n > 0) => {
            Err(BadReference::Port(p.to_owned()))
        }
        _ => Ok(()),
    }
}

/// `[a-zA-Z0-9]`, or that at both ends with `-` allowed between.
fn is_host_part(part: &str) -> bool {
    !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// `[a-z0-9]+` runs joined by one `.`, one or two `_`, or any `-`s.
fn is_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        // A separator is followed by an alphanumeric, never by another.
        if !b.get(i).is_some_and(alnum) {
            return false;
        }
    }
    true
}

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = tag.bytes();
    tag.len() <= MAX_TAG && bytes.next().is_some_and(word) && bytes.all(|b| word(b) || b == b'.' || b == b'-')
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// A digest a runtime can verify: go-digest's, with the algorithms
/// containerd and CRI-O register.
fn check_digest(digest: &str) -> Result<(), BadReference> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(BadReference::DigestFormat(digest.to_owned()));
    };
    let (algorithm, digits) = match algorithm {
        "sha256" => ("sha256", 64),
        "sha384" => ("sha384", 96),
        "sha512" => ("sha512", 128),
        other => return Err(BadReference::DigestAlgorithm(other.to_owned())),
    };
    if hex.len() != digits || !hex.bytes().all(is_lower_hex) {
        return Err(BadReference::DigestHex { algorithm, digits, hex: crate::validate::shortened(hex) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_the_kubelet_pulls_are_taken() {
        let sha = "a".repeat(64);
        let long_path = format!("team/{}", "a".repeat(MAX_PATH - 5));
        for good in [
            "nginx",
            "nginx:1.27",
            "library/nginx",
            "docker.io/library/nginx:1.27",
            "index.docker.io/nginx",
            "localhost/app",
            "localhost:5000/app:dev",
            "registry.example.com/team/app",
            "registry.example.com:5000/team/app:v1.2.3-rc_1",
            "Registry.Example.COM/app",
            "MyRegistry/app",
            "127.0.0.1:5000/app",
            "[::1]:5000/app",
            "[fe80::1]/app",
            "a-b.c/d--e/f__g/h.i/j_k:Tag_1.x-y",
            "ghcr.io/o/a/b/c/d",
            "x",
            "0",
            "example.com",
            "localhost:5000",
            &format!("app@sha256:{sha}"),
            &format!("app:1@sha256:{sha}"),
            &format!("app@sha384:{}", "0".repeat(96)),
            &format!("app@sha512:{}", "f".repeat(128)),
            &format!("app:{}", "t".repeat(MAX_TAG)),
            &long_path,
        ] {
            assert_eq!(ImageRef::parse(good).map(|r| r.to_string()), Ok(good.to_owned()), "{good}");
        }
    }

    #[test]
    fn each_part_that_breaks_the_grammar_is_named() {
        use BadReference as B;
        let s = |x: &str| x.to_owned();
        let sha = "a".repeat(64);
        let table: Vec<(String, BadReference)> = vec![
            (s(""), B::Empty),
            (s("nginx :1"), B::Space),
            (s("nginx\t"), B::Space),
            (s("nginx\u{85}"), B::Space),
            (sha.clone(), B::Identifier),
            (s(":1.27"), B::NoRepository),
            (s("registry.example.com/"), B::NoRepository),
            (format!("@sha256:{sha}"), B::NoRepository),
            (s("Nginx:1.27"), B::Uppercase { written: s("Nginx"), lower: s("nginx") }),
            (s("team/App"), B::Uppercase { written: s("team/App"), lower: s("team/app") }),
            (s("ghcr.io/Org/app"), B::Uppercase { written: s("Org/app"), lower: s("org/app") }),
            (s("reg_istry.io/app"), B::Host(s("reg_istry.io"))),
            (s("-registry.io/app"), B::Host(s("-registry.io"))),
            (s("registry..io/app"), B::Host(s("registry..io"))),
            (s("[::1/app"), B::Host(s("[::1"))),
            (s("[]:5000/app"), B::Host(s("[]:5000"))),
            (s("[::1]5000/app"), B::Host(s("[::1]5000"))),
            (s("registry.example.com:port/db"), B::Port(s("port"))),
            (s("registry.example.com:/db"), B::Port(s(""))),
            (s("registry.example.com:70000/db"), B::Port(s("70000"))),
            (s("localhost:0/db"), B::Port(s("0"))),
            (s("team//app"), B::EmptyComponent(s("team//app"))),
            (s("team/app/"), B::EmptyComponent(s("team/app/"))),
            (s("a..b"), B::Component(s("a..b"))),
            (s("a___b"), B::Component(s("a___b"))),
            (s("a._b"), B::Component(s("a._b"))),
            (s("-a"), B::Component(s("-a"))),
            (s("a-"), B::Component(s("a-"))),
            (s("_a"), B::Component(s("_a"))),
            (s("team/a+b"), B::Component(s("a+b"))),
            (s("café"), B::Component(s("café"))),
            (format!("team/{}", "a".repeat(MAX_PATH - 4)), B::TooLong(MAX_PATH + 1)),
            // A one-part path is Docker Hub's `library/` one.
            ("a".repeat(MAX_PATH - 7), B::TooLong(MAX_PATH + 1)),
            (s("nginx:"), B::Tag(s(""))),
            (s("nginx:1.27:2"), B::Tag(s("1.27:2"))),
            (s("nginx:.1"), B::Tag(s(".1"))),
            (s("nginx:-1"), B::Tag(s("-1"))),
            // The first part has a `:`, so it is a registry, whose port is `a`.
            (s("nginx:a/b"), B::Port(s("a"))),
            (s("team/nginx:1/x"), B::Tag(s("1/x"))),
            (format!("nginx:{}", "t".repeat(MAX_TAG + 1)), B::Tag("t".repeat(MAX_TAG + 1))),
            (s("nginx@"), B::DigestFormat(s(""))),
            (s("nginx@latest"), B::DigestFormat(s("latest"))),
            (format!("nginx@md5:{}", "a".repeat(32)), B::DigestAlgorithm(s("md5"))),
            (format!("nginx@SHA256:{sha}"), B::DigestAlgorithm(s("SHA256"))),
            (s("nginx@sha256:abc"), B::DigestHex { algorithm: "sha256", digits: 64, hex: s("abc") }),
            (
                format!("nginx@sha256:{}", "A".repeat(64)),
                B::DigestHex { algorithm: "sha256", digits: 64, hex: crate::validate::shortened(&"A".repeat(64)) },
            ),
            (
                format!("nginx@sha256:{sha}@sha256:{sha}"),
                B::DigestHex {
                    algorithm: "sha256",
                    digits: 64,
                    hex: crate::validate::shortened(&format!("{sha}@sha256:{sha}")),
                },
            ),
        ];
        for (bad, want) in table {
            assert_eq!(ImageRef::parse(&bad), Err(want), "{bad:?}");
        }
    }

    /// Each message names the part it is about, and the help shows a
    /// reference that follows the grammar.
    #[test]
    fn the_messages_say_what_is_wrong() {
        let said = |s: &str| ImageRef::parse(s).unwrap_err().to_string();
        assert_eq!(
            said("Nginx"),
            "the repository `Nginx` has capital letters, and a repository is lowercase (`nginx`)"
        );
        assert!(said("r.io:x/a").starts_with("the registry's port `x`"));
        assert!(said("nginx:1:2").starts_with("the tag `1:2` is not a tag"));
        for example in ["docker.io/library/nginx:1.27", "registry.example.com:5000/team/app"] {
            assert!(SHAPE.contains(example));
            let with_digest = format!("{example}@sha256:{}", "0".repeat(64));
            assert!(ImageRef::parse(example).is_ok() && ImageRef::parse(&with_digest).is_ok());
        }
    }
}
