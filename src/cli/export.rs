//! `paddock export kubernetes`: the manifests as Kubernetes objects, on
//! stdout as a YAML stream; what they cannot say on stderr and as
//! comments in the YAML. The mapping itself is `crate::export`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::check::{CheckedFile, Validated, validate_paths};
use super::{CliError, OrFail};
use crate::export::reference::{ImageRef, SHAPE};
use crate::export::{self, Exported, Kind, Level, Object, Options};
use crate::model::WorkloadName;
use crate::validate::{self, Color, HostChecks};

/// Exit statuses of `export`, as `check`'s.
pub const EXPORTED: u8 = 0;
pub const INVALID: u8 = 1;
pub const USAGE_OR_IO: u8 = 2;

/// Write manifests as another system's objects.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Debug, Subcommand)]
pub enum Target {
    Kubernetes(KubernetesArgs),
}

/// Write each valid manifest as Kubernetes objects (a YAML stream on stdout).
///
/// Manifests are validated as `check` validates them. An invalid one is
/// reported on stderr (FILE:LINE:COL) and left out; the others are written
/// and the exit status is 1. Whatever a manifest says that Kubernetes
/// cannot is listed at the top of its object and on stderr. Exit status:
/// 0 when every file was exported, 1 when any is invalid, 2 for a usage or
/// I/O error (an unreadable file, a missing image, a bad image map, two
/// files of one workload), when nothing is written.
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// Manifest files, or directories whose *.toml files are exported
    /// (names the daemon ignores are skipped, as `check` skips them).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// What each workload becomes: a Pod, or a Deployment of one replica
    /// (whose pods always restart, and are replaced, never doubled).
    #[arg(long, value_enum, default_value_t = KindArg::Pod)]
    pub kind: KindArg,

    /// The namespace of the objects. A Namespace object of this name is
    /// written first, labelled pod-security.kubernetes.io/enforce with the
    /// level the workloads claim; so the cluster's own (`default`,
    /// `kube-*`) are refused.
    #[arg(long, value_name = "NS", default_value = "paddock", value_parser = namespace_name)]
    pub namespace: String,

    /// The container image every workload runs (a manifest's root is a
    /// host directory; a pod's is an image): a reference the kubelet can
    /// pull, [REGISTRY[:PORT]/]REPOSITORY[:TAG][@DIGEST].
    #[arg(long, value_name = "IMAGE", conflicts_with = "image_map", value_parser = image_reference)]
    pub image: Option<ImageRef>,

    /// A TOML file of `WORKLOAD = "IMAGE"` lines: the image of each
    /// workload, every one checked as --image is, and each problem shown
    /// at its line. Every workload exported needs one; names of workloads
    /// not among the PATHs are left alone, so one map serves every
    /// host's directory.
    #[arg(long, value_name = "FILE")]
    pub image_map: Option<PathBuf>,

    #[command(flatten)]
    pub policy: super::PolicyArgs,

    /// The daemon's configuration the manifests run under: its policies,
    /// policy_dir, volumes_root, restart defaults and id isolation apply,
    /// as the daemon applies them [default: the built-in defaults: the
    /// files are meant for another host].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Pod,
    Deployment,
}

/// Why the images cannot be known; nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read the image map {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Its problems, to be shown with `validate::render` against `text`,
    /// each at its line, as a manifest's are.
    #[error(
        "{} is not an image map (TOML lines of WORKLOAD = \"IMAGE\"): {} problem(s), shown above; nothing was written",
        .path.display(), .problems.len()
    )]
    Invalid { path: PathBuf, text: String, problems: Vec<validate::Problem> },
    #[error(
        "no image for {}: a pod runs an image, not a host directory; give one with --image IMAGE, or each workload's with --image-map FILE{unmatched}",
        .names.join(", ")
    )]
    Missing {
        names: Vec<String>,
        /// A hint for a misspelt name: the map's names that no file of the PATHs has.
        unmatched: String,
    },
}

/// Two files of one run that are one workload: their objects would have
/// one name in one namespace, and the second applied would replace the first.
#[derive(Debug, thiserror::Error)]
#[error(
    "{first} and {second} are both the workload `{name}`, and one namespace holds one object of a name: export them in separate runs (with --namespace), e.g. one per host directory"
)]
pub struct SameWorkload {
    name: String,
    first: String,
    second: String,
}

/// Each workload once among `files`, valid or not (its name is its
/// file's): two hosts' directories with one workload each are refused as
/// such, before the checks across files say that each publishes the
/// other's ports.
fn one_file_per_workload(files: &[CheckedFile]) -> Result<(), SameWorkload> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for f in files {
        let Some(name) = Path::new(&f.file).file_name().and_then(|n| n.to_str()?.strip_suffix(".toml")) else {
            continue;
        };
        if let Some(first) = seen.insert(name, &f.file) {
            return Err(SameWorkload { name: name.to_owned(), first: first.to_owned(), second: f.file.clone() });
        }
    }
    Ok(())
}

/// Two objects of one kind that two workloads' names made equal (a
/// Service's name starts with a letter, so the Service of `1web` is
/// `w-1web`, as is `w-1web`'s; a long name is cut to 63 characters).
#[derive(Debug, thiserror::Error)]
#[error(
    "{first} and {second} would both write the {kind} `{name}`, and one namespace holds one {kind} of a name: rename one of the files (a workload's Service is named after it, with `w-` before a name that starts with a digit, cut to 63 characters)"
)]
pub struct SameObjectName {
    kind: &'static str,
    name: String,
    first: String,
    second: String,
}

/// Each object's kind and name once among the files' objects.
fn one_name_per_object<'a>(objects: impl IntoIterator<Item = (&'a str, &'a Object)>) -> Result<(), SameObjectName> {
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (file, object) in objects {
        let Some(name) = object.name() else { continue };
        if let Some(first) = seen.insert((object.kind(), name), file) {
            return Err(SameObjectName {
                kind: object.kind(),
                name: name.to_owned(),
                first: first.to_owned(),
                second: file.to_owned(),
            });
        }
    }
    Ok(())
}

/// `--image`: a reference the kubelet can pull.
fn image_reference(s: &str) -> Result<ImageRef, String> {
    ImageRef::parse(s).map_err(|e| format!("not an image reference: {e}; {SHAPE}"))
}

/// `--namespace`: a Namespace's name is a DNS label, and not one of the
/// cluster's own.
fn namespace_name(s: &str) -> Result<String, String> {
    if !export::kubernetes::is_dns_label(s) {
        return Err("a namespace is a DNS label: lowercase letters, digits and `-`, at most 63, starting and ending with a letter or digit".to_owned());
    }
    // Its Namespace object, with the Pod Security labels, would relabel
    // the cluster's own: kube-system at `baseline` refuses the privileged
    // pods (kube-proxy, the network plugin's) as they are next made.
    if s == "default" || s.starts_with("kube-") {
        return Err(format!(
            "{s} is a namespace of the cluster's own, and the objects begin with a Namespace labelled with a Pod Security level, which would change what the cluster lets run there: name one of your own"
        ));
    }
    Ok(s.to_owned())
}

pub fn run(args: ExportArgs) -> Result<super::ExitCode, CliError> {
    let Target::Kubernetes(args) = args.target;
    kubernetes(args)
}

fn kubernetes(args: KubernetesArgs) -> Result<super::ExitCode, CliError> {
    let config = match &args.config {
        Some(path) => super::load_client_config(Some(path)).or_fail(USAGE_OR_IO)?,
        None => crate::config::Config::default(),
    };
    let validator = args.policy.validator(&config, true).or_fail(USAGE_OR_IO)?;
    // A pod's ids are what the kubelet maps, more or fewer than this host's slices.
    let validator = validator.with_restart_defaults(config.restart.clone()).for_pods();
    let policy_level = Level::of_policies(validator.policies().iter().map(|p| p.name.as_str()));
    // The files are meant for a cluster's nodes, not this host.
    let Validated { mut files, errors, .. } = validate_paths(&validator, &args.paths, HostChecks::Skip);
    // What the API server would refuse makes a file invalid here, as a problem at its key.
    for f in &mut files {
        let Some(spec) = &f.spec else { continue };
        let mut refused = export::kubernetes::refused(&spec.manifest, &validate::spans_of(&f.text));
        if !refused.is_empty() {
            f.problems.append(&mut refused);
            f.spec = None;
        }
    }
    one_file_per_workload(&files).or_fail(USAGE_OR_IO)?;
    for f in &files {
        for p in &f.problems {
            eprintln!("{}", validate::render(p, &f.file, &f.text, Color::Never));
        }
    }
    if let Some(e) = errors.first() {
        errors.iter().skip(1).for_each(|e| eprintln!("paddock export: {e}"));
        return Err(CliError::new(USAGE_OR_IO, e.clone()));
    }
    if files.is_empty() {
        eprintln!("paddock export: no manifest in {}; nothing written", paths_named(&args.paths));
    }
    let images = match images(&args, &files) {
        Ok(images) => images,
        Err(e) => {
            if let ImageError::Invalid { path, text, problems } = &e {
                let shown = path.display().to_string();
                problems.iter().for_each(|p| eprintln!("{}", validate::render(p, &shown, text, Color::Never)));
            }
            return Err(CliError::new(USAGE_OR_IO, e.to_string()));
        }
    };

    let kind = match args.kind {
        KindArg::Pod => Kind::Pod,
        KindArg::Deployment => Kind::Deployment,
    };
    let options = Options {
        kind,
        namespace: args.namespace.clone(),
        policy_level,
        shared_slice: config.remap.isolation == crate::idmap::Isolation::Shared,
    };
    let exports: Vec<(&CheckedFile, &validate::WorkloadSpec, Exported)> = files
        .iter()
        .filter_map(|f| Some((f, f.spec.as_ref()?)))
        .map(|(f, spec)| (f, spec, export::export(spec, &images[spec.name.as_str()], &options)))
        .collect();
    one_name_per_object(
        exports.iter().flat_map(|(f, _, exported)| exported.objects.iter().map(|o| (f.file.as_str(), o))),
    )
    .or_fail(USAGE_OR_IO)?;
    let mut documents = Vec::new();
    let mut levels = Vec::new();
    for (f, spec, exported) in exports {
        let spans = validate::spans_of(&f.text);
        for item in &exported.unsupported {
            // FILE:LINE where the manifest says it, as a problem is shown.
            let written = item.pointers(&spec.manifest).into_iter().find_map(|p| spans.get(&p).cloned());
            let at = match written.map(|node| node.key.unwrap_or(node.value)) {
                Some(span) => format!("{}:{}", f.file, validate::line_col(&f.text, span.start).0),
                None => f.file.clone(),
            };
            let line = format!("{at}: {}: {}{item}", spec.name, export::NOT_EXPRESSIBLE);
            eprintln!("{}", export::one_line(&line));
        }
        levels.push(exported.level);
        let comments = export::comments(&f.file, spec.name.as_str(), &exported);
        let mut objects = exported.objects.into_iter();
        if let Some(first) = objects.next() {
            documents.push((comments, first));
        }
        documents.extend(objects.map(|o| (Vec::new(), o)));
    }
    if let Some(level) = levels.iter().min() {
        let comment =
            vec![format!("paddock: the least strict Pod Security Standard the workloads below claim: {level}")];
        documents.insert(0, (comment, Object::Namespace(Box::new(export::namespace(&args.namespace, *level)))));
    }
    let yaml = export::render(&documents).or_fail(USAGE_OR_IO)?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(if files.iter().any(|f| f.spec.is_none()) { INVALID } else { EXPORTED })
}

/// Each valid workload's image, from --image or --image-map; every one
/// missing is named at once.
fn images(args: &KubernetesArgs, files: &[CheckedFile]) -> Result<BTreeMap<String, ImageRef>, ImageError> {
    let valid: Vec<&str> = files.iter().filter_map(|f| Some(f.spec.as_ref()?.name.as_str())).collect();
    let map = match (&args.image, &args.image_map) {
        (Some(image), _) => valid.iter().map(|n| ((*n).to_owned(), image.clone())).collect(),
        (None, Some(path)) => read_image_map(path)?,
        (None, None) => BTreeMap::new(),
    };
    let names: Vec<String> = valid.iter().filter(|n| !map.contains_key(**n)).map(|n| (*n).to_owned()).collect();
    if names.is_empty() {
        return Ok(map);
    }
    let stems: Vec<&str> = files.iter().filter_map(|f| stem(&f.file)).collect();
    let unmatched: Vec<&str> = map.keys().map(String::as_str).filter(|k| !stems.contains(k)).collect();
    let unmatched = match (&args.image_map, unmatched.as_slice()) {
        (Some(path), [_, ..]) => {
            format!(" ({} names no workload of the PATHs: {})", path.display(), unmatched.join(", "))
        }
        _ => String::new(),
    };
    Err(ImageError::Missing { names, unmatched })
}

fn paths_named(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn stem(file: &str) -> Option<&str> {
    let name = Path::new(file).file_name()?.to_str()?;
    WorkloadName::stem_of_manifest_file(name)
}

/// An image map: `WORKLOAD = "IMAGE"`. It may name workloads other than
/// those exported (a fleet's map serves each host's directory); a
/// misspelt name shows as a workload with no image.
pub fn read_image_map(path: &Path) -> Result<BTreeMap<String, ImageRef>, ImageError> {
    // Read as a manifest is: a regular file of at most 1 MiB of UTF-8, opened
    // without blocking (a FIFO in a fleet's repository cannot hang the gate).
    use crate::validate::load::{InvalidFile, LoadError};
    let text = crate::validate::load::read_manifest(path).map_err(|e| match e {
        // A byte that is not UTF-8 has a line, shown as a manifest's is.
        LoadError::Invalid(invalid @ InvalidFile::NotUtf8 { .. }) => ImageError::Invalid {
            path: path.to_owned(),
            text: invalid.text().to_owned(),
            problems: vec![invalid.problem()],
        },
        LoadError::Invalid(invalid) => ImageError::Read { path: path.to_owned(), reason: invalid.to_string() },
        LoadError::Io { source, .. } => ImageError::Read { path: path.to_owned(), reason: source.to_string() },
    })?;
    export::image::parse_map(&text).map_err(|problems| ImageError::Invalid { path: path.to_owned(), text, problems })
}
