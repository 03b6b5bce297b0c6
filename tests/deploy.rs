//! The systemd files in deploy/ are valid as systemd reads them: every unit
//! passes `systemd-analyze verify` (with ExecStart pointing at the built
//! binary, since /usr/bin/certd is not installed here), and the
//! sysusers.d file passes `systemd-sysusers --dry-run`.
//!
//! The Kubernetes manifests (deploy/kubernetes/) are checked for what
//! breaks a deployment without a cluster to try it on: every document
//! parses; every name a workload references (namespace, service account,
//! ConfigMap, Secret, volume, named port, Service) is defined in the
//! manifests or created by a `kubectl create` the manifests' instructions
//! give; every certd.toml they carry is one certd accepts, binds all
//! interfaces, and names the Service that workloads dial; every certd image
//! is the one deploy/Dockerfile's documented build makes; and the files fit
//! together (every certd serve can attest the agents' and workloads'
//! service-account tokens, and each Service selects only its own file's
//! pods).

mod common;

use std::path::Path;
use std::process::Command;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

#[test]
fn every_systemd_unit_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(deploy()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/certd", common::CERTD);
        // A template is verified as one instance of it.
        let name = name.replace("@.service", "@example.service");
        std::fs::write(tmp.path().join(&name), text).unwrap();
        units.push(name);
    }
    assert!(units.len() >= 3, "{units:?}");
    for unit in &units {
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(tmp.path().join(unit))
            .output()
            .expect("systemd-analyze (package systemd)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Warnings about the host (no running systemd, missing users or
        // files the unit creates) are not the unit's; these are.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|line| {
                line.contains("Unknown key")
                    || line.contains("Unknown section")
                    || line.contains("Invalid")
                    || line.contains("Failed to parse")
                    || line.contains("is not executable")
            })
            .collect();
        assert!(
            output.status.success() && problems.is_empty(),
            "{unit}: {stderr}"
        );
    }
}

#[test]
fn the_sysusers_file_is_valid() {
    let output = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(deploy().join("certd.sysusers.conf"))
        .output()
        .expect("systemd-sysusers (package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
}

/// One Kubernetes object from a manifest file.
struct Object {
    file: String,
    kind: String,
    name: String,
    namespace: String,
    doc: serde_json::Value,
}

/// Every object in deploy/kubernetes/*.yaml, and every file's comments
/// (all of them, then by file).
fn manifests() -> (
    Vec<Object>,
    String,
    std::collections::HashMap<String, String>,
) {
    use serde::Deserialize;
    let mut objects = Vec::new();
    let mut comments = String::new();
    let mut comments_by_file = std::collections::HashMap::new();
    let dir = deploy().join("kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let own: String = text
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        comments.push_str(&own);
        comments_by_file.insert(file.clone(), own);
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = serde_json::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            let field = |pointer: &str| doc.pointer(pointer).and_then(|v| v.as_str());
            let kind = field("/kind").unwrap_or_else(|| panic!("{file}: a document without kind"));
            assert!(
                field("/apiVersion").is_some(),
                "{file}: {kind} without apiVersion"
            );
            let name = field("/metadata/name")
                .unwrap_or_else(|| panic!("{file}: {kind} without a name"))
                .to_owned();
            let namespace = field("/metadata/namespace").unwrap_or("").to_owned();
            if kind != "Namespace" {
                assert!(
                    !namespace.is_empty(),
                    "{file}: {kind} {name} names no namespace"
                );
            }
            objects.push(Object {
                file: file.clone(),
                kind: kind.to_owned(),
                name,
                namespace,
                doc,
            });
        }
    }
    (objects, comments, comments_by_file)
}

fn strings(value: Option<&serde_json::Value>) -> Vec<&serde_json::Value> {
    value
        .and_then(|v| v.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The pod spec of a workload object, if it is one.
fn pod_spec(object: &Object) -> Option<&serde_json::Value> {
    match object.kind.as_str() {
        "Pod" => object.doc.pointer("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
            object.doc.pointer("/spec/template/spec")
        }
        _ => None,
    }
}

fn containers(spec: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut all = strings(spec.get("initContainers"));
    all.extend(strings(spec.get("containers")));
    all
}

#[test]
fn every_kubernetes_manifest_references_only_what_is_defined_or_created() {
    let (objects, comments, comments_by_file) = manifests();
    let defined = |kind: &str, namespace: &str, name: &str| {
        objects.iter().any(|o| {
            o.kind == kind && o.name == name && (kind == "Namespace" || o.namespace == namespace)
        })
    };
    // What the instructions create by hand: secrets and ConfigMaps holding
    // the CA's material, which no manifest can carry.
    let created = |what: &str, namespace: &str, name: &str| {
        comments.contains(&format!("-n {namespace} create {what} {name}"))
    };
    let version = env!("CARGO_PKG_VERSION");
    let mut checked_references = 0;
    for object in &objects {
        let at = format!("{}: {} {}", object.file, object.kind, object.name);
        if object.kind != "Namespace" {
            assert!(
                defined("Namespace", "", &object.namespace)
                    || comments.contains(&format!("create namespace {}", object.namespace)),
                "{at}: namespace {} is not defined",
                object.namespace
            );
        }
        if let (Some(selector), Some(labels)) = (
            object
                .doc
                .pointer("/spec/selector/matchLabels")
                .and_then(|v| v.as_object()),
            object
                .doc
                .pointer("/spec/template/metadata/labels")
                .and_then(|v| v.as_object()),
        ) {
            for (key, value) in selector {
                assert_eq!(
                    labels.get(key),
                    Some(value),
                    "{at}: the selector does not match the pod labels"
                );
            }
        }
        if object.kind == "StatefulSet" {
            let service = object
                .doc
                .pointer("/spec/serviceName")
                .and_then(|v| v.as_str())
                .unwrap();
            assert!(
                defined("Service", &object.namespace, service),
                "{at}: serviceName {service}"
            );
        }
        let Some(spec) = pod_spec(object) else {
            continue;
        };
        let ns = object.namespace.as_str();
        if let Some(account) = spec.get("serviceAccountName").and_then(|v| v.as_str()) {
            assert!(
                defined("ServiceAccount", ns, account),
                "{at}: service account {account}"
            );
            checked_references += 1;
        }
        let mut volumes: Vec<&str> = Vec::new();
        for volume in strings(spec.get("volumes")) {
            volumes.push(volume["name"].as_str().unwrap());
            if let Some(name) = volume.pointer("/configMap/name").and_then(|v| v.as_str()) {
                assert!(
                    defined("ConfigMap", ns, name) || created("configmap", ns, name),
                    "{at}: ConfigMap {name} in {ns} is neither defined nor created by the instructions"
                );
                checked_references += 1;
            }
            if let Some(name) = volume
                .pointer("/secret/secretName")
                .and_then(|v| v.as_str())
            {
                assert!(
                    defined("Secret", ns, name) || created("secret generic", ns, name),
                    "{at}: Secret {name} in {ns} is neither defined nor created by the instructions"
                );
                checked_references += 1;
            }
        }
        for claim in strings(object.doc.pointer("/spec/volumeClaimTemplates")) {
            volumes.push(
                claim
                    .pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap(),
            );
        }
        for container in containers(spec) {
            let container_name = container["name"].as_str().unwrap();
            for mount in strings(container.get("volumeMounts")) {
                let name = mount["name"].as_str().unwrap();
                assert!(
                    volumes.contains(&name),
                    "{at}/{container_name}: volume {name}"
                );
                checked_references += 1;
            }
            for variable in strings(container.get("env")) {
                if let Some(name) = variable
                    .pointer("/valueFrom/secretKeyRef/name")
                    .and_then(|v| v.as_str())
                {
                    assert!(
                        defined("Secret", ns, name) || created("secret generic", ns, name),
                        "{at}/{container_name}: Secret {name}"
                    );
                    checked_references += 1;
                }
            }
            let ports: Vec<&str> = strings(container.get("ports"))
                .iter()
                .filter_map(|p| p.get("name").and_then(|n| n.as_str()))
                .collect();
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                if let Some(port) = container
                    .pointer(&format!("/{probe}/httpGet/port"))
                    .and_then(|v| v.as_str())
                {
                    assert!(
                        ports.contains(&port),
                        "{at}/{container_name}: {probe} port {port}"
                    );
                }
            }
            let image = container["image"].as_str().unwrap();
            if image.starts_with("certd") {
                assert_eq!(image, format!("certd:{version}"), "{at}/{container_name}");
            }
            // The files an init container copies from the CA Secret are
            // the ones its file's instructions put in it.
            let command = container
                .get("command")
                .map(|c| c.to_string())
                .unwrap_or_default();
            for word in command.split(|c: char| c.is_whitespace() || c == '"') {
                if let Some(file) = word.strip_prefix("/ca/").filter(|f| !f.is_empty()) {
                    assert!(
                        comments_by_file[&object.file].contains(&format!("--from-file=ca/{file}")),
                        "{at}/{container_name}: copies {file}, which the instructions do not put in the Secret"
                    );
                }
            }
            // Every certd a container dials is a Service with that port,
            // whose name certd's serving certificate carries.
            for arg in strings(container.get("args")) {
                let Some(url) = arg
                    .as_str()
                    .and_then(|a| a.strip_prefix("--server=https://"))
                else {
                    continue;
                };
                let (host, port) = url.split_once(':').unwrap();
                let mut labels = host.split('.');
                let (service, service_ns) = (labels.next().unwrap(), labels.next().unwrap());
                let found = objects
                    .iter()
                    .find(|o| o.kind == "Service" && o.name == service && o.namespace == service_ns)
                    .unwrap_or_else(|| panic!("{at}: dials {host}, which no Service is"));
                assert!(
                    strings(found.doc.pointer("/spec/ports"))
                        .iter()
                        .any(|p| p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(port)),
                    "{at}: Service {service} has no port {port}"
                );
                assert!(
                    server_names(&objects, service_ns)
                        .iter()
                        .any(|names| names.contains(&host.to_owned())),
                    "{at}: {host} is not among certd's server_names in {service_ns}"
                );
                checked_references += 1;
            }
        }
    }
    // Services select pods that exist and name ports those pods have.
    for service in objects.iter().filter(|o| o.kind == "Service") {
        let selector = service
            .doc
            .pointer("/spec/selector")
            .and_then(|v| v.as_object())
            .unwrap();
        let pods: Vec<&Object> = objects
            .iter()
            .filter(|o| o.namespace == service.namespace && pod_spec(o).is_some())
            .filter(|o| {
                let labels = o.doc.pointer("/spec/template/metadata/labels");
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .collect();
        assert!(
            !pods.is_empty(),
            "{}: Service {} selects no pods",
            service.file,
            service.name
        );
        for port in strings(service.doc.pointer("/spec/ports")) {
            if let Some(target) = port.get("targetPort").and_then(|v| v.as_str()) {
                for pod in &pods {
                    let has = containers(pod_spec(pod).unwrap()).iter().any(|c| {
                        strings(c.get("ports"))
                            .iter()
                            .any(|p| p["name"].as_str() == Some(target))
                    });
                    assert!(
                        has,
                        "{}: {} has no port {target} for Service {}",
                        pod.file, pod.name, service.name
                    );
                }
            }
        }
    }
    assert!(
        checked_references > 30,
        "{checked_references} references checked"
    );
    // The image the manifests run is the one the documented build makes.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!(
        "docker build -t certd:{version} -f deploy/Dockerfile ."
    )));
    assert!(
        dockerfile.contains("USER 65532"),
        "the image runs as non-root"
    );
}

/// The `server_names` of each certd.toml carried by a ConfigMap in
/// `namespace`, after checking that certd accepts the file and that it
/// listens on all interfaces.
fn server_names(objects: &[Object], namespace: &str) -> Vec<Vec<String>> {
    objects
        .iter()
        .filter(|o| o.kind == "ConfigMap" && o.namespace == namespace)
        .filter_map(|o| {
            o.doc
                .pointer("/data/certd.toml")
                .and_then(|v| v.as_str())
                .map(|t| (o, t))
        })
        .map(|(object, text)| {
            let config = certd::config::ConfigFile::parse(text, Path::new("/etc/certd/certd.toml"))
                .and_then(|file| file.validate())
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {} carries a certd.toml certd refuses: {e}",
                        object.file, object.name
                    )
                });
            assert!(
                config.grpc_addr.ip().is_unspecified(),
                "{}: grpc_addr must bind all interfaces",
                object.file
            );
            assert!(
                config.http_addr.ip().is_unspecified(),
                "{}: http_addr must bind all interfaces",
                object.file
            );
            config.server_names
        })
        .collect()
}

#[test]
fn every_kubernetes_certd_toml_is_valid_and_the_replicas_keep_their_records_in_postgresql() {
    let (objects, _, _) = manifests();
    let names = server_names(&objects, "certd-system");
    assert_eq!(
        names.len(),
        2,
        "server.yaml and replicas.yaml each carry one"
    );
    for names in names {
        assert!(
            names.contains(&"certd.certd-system.svc".to_owned()),
            "{names:?}"
        );
    }
    // replicas.yaml takes the database URL from a Secret, not the file.
    let replicas = objects
        .iter()
        .find(|o| o.file == "replicas.yaml" && o.kind == "Deployment")
        .unwrap();
    assert!(replicas.doc.to_string().contains("CERTD_DATABASE_URL"));
}

/// The manifests fit together as a cluster would find out: every `certd
/// serve` has the Kubernetes attestor configured (a `[kubernetes]` section)
/// for the audience the agents' and workloads' projected tokens carry, with
/// every file it reads for it mounted (the pod's own service-account token
/// where it names one, so never with token mounting disabled); every file
/// that runs certd defines the Service agents and workloads dial, selecting
/// its pods; each Service selects only its own file's pods (server.yaml's
/// and replicas.yaml's never each other's, which would mix certds on two
/// databases); and `certd replica import` reads a package the instructions
/// put in the Secret it mounts.
#[test]
fn the_kubernetes_manifests_fit_together() {
    const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (objects, _, comments_by_file) = manifests();
    let args_of = |container: &serde_json::Value| -> Vec<String> {
        strings(container.get("args"))
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect()
    };
    let labels_of = |object: &Object| {
        object
            .doc
            .pointer("/spec/template/metadata/labels")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default()
    };
    let selects = |service: &Object, pods: &Object| {
        let labels = labels_of(pods);
        service.namespace == pods.namespace
            && service
                .doc
                .pointer("/spec/selector")
                .and_then(|v| v.as_object())
                .is_some_and(|selector| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    // What agents and workloads dial, and the audiences of their tokens.
    let mut dialed = Vec::new();
    let mut audiences = Vec::new();
    for object in &objects {
        let Some(spec) = pod_spec(object) else {
            continue;
        };
        let mut dials = false;
        for container in containers(spec) {
            for arg in args_of(container) {
                if let Some(url) = arg.strip_prefix("--server=https://") {
                    let host = url.split(':').next().unwrap();
                    let mut labels = host.split('.');
                    let service = labels.next().unwrap().to_owned();
                    let namespace = labels.next().unwrap().to_owned();
                    dialed.push((service, namespace, object.file.clone()));
                    dials = true;
                }
            }
        }
        if dials {
            for volume in strings(spec.get("volumes")) {
                for source in strings(volume.pointer("/projected/sources")) {
                    if let Some(audience) = source
                        .pointer("/serviceAccountToken/audience")
                        .and_then(|v| v.as_str())
                    {
                        audiences.push((audience.to_owned(), object.file.clone()));
                    }
                }
            }
        }
    }
    assert!(
        dialed.len() >= 2 && audiences.len() >= 2,
        "{dialed:?} {audiences:?}"
    );

    let mut serving = Vec::new();
    for object in &objects {
        let Some(spec) = pod_spec(object) else {
            continue;
        };
        let at = format!("{}: {} {}", object.file, object.kind, object.name);
        for container in containers(spec) {
            let args = args_of(container);
            if args.first().map(String::as_str) == Some("replica")
                && args.get(1).map(String::as_str) == Some("import")
            {
                let package = args.get(2).expect("a package");
                let (dir, name) = package.rsplit_once('/').unwrap();
                let secret = mount_of(container, spec, dir)
                    .and_then(|v| v.pointer("/secret/secretName").and_then(|s| s.as_str()))
                    .unwrap_or_else(|| panic!("{at}: {dir} is not a Secret's volume"))
                    .to_owned();
                assert!(
                    comments_by_file[&object.file].contains(&format!(
                        "create secret generic {secret} --from-file={name}"
                    )),
                    "{at}: imports {package}, which the instructions do not put in Secret {secret}"
                );
            }
            if args.first().map(String::as_str) != Some("serve") {
                continue;
            }
            serving.push(object.file.clone());
            let config = args
                .iter()
                .find_map(|a| a.strip_prefix("--config="))
                .unwrap_or_else(|| panic!("{at}: certd serve without --config"));
            let (dir, file_name) = config.rsplit_once('/').unwrap();
            let map = mount_of(container, spec, dir)
                .and_then(|v| v.pointer("/configMap/name").and_then(|s| s.as_str()))
                .unwrap_or_else(|| panic!("{at}: no ConfigMap is mounted at {dir}"));
            let text = objects
                .iter()
                .find(|o| o.kind == "ConfigMap" && o.name == map && o.namespace == object.namespace)
                .and_then(|o| o.doc.pointer(&format!("/data/{file_name}")))
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("{at}: ConfigMap {map} has no {file_name}"));
            let file = certd::config::ConfigFile::parse(text, Path::new(config)).unwrap();
            let kubernetes = file.kubernetes.unwrap_or_else(|| {
                panic!("{at}: its certd.toml has no [kubernetes] section: agents and workloads cannot attest with their service-account tokens")
            });
            // The section as written: its attestor checks it at start.
            let field = |name: &str| {
                kubernetes.get(name).map(|value| {
                    value
                        .as_str()
                        .unwrap_or_else(|| panic!("{at}: [kubernetes] {name} is not a string"))
                        .to_owned()
                })
            };
            let audience = field("audience").unwrap_or_else(|| {
                certd::attest::kubernetes::DEFAULT_KUBERNETES_AUDIENCE.to_owned()
            });
            for (theirs, file) in &audiences {
                assert_eq!(
                    *theirs, audience,
                    "{at}: {file}'s tokens are for another audience"
                );
            }
            let mut read = vec![
                field("jwks_file"),
                field("jwks_url_ca_file"),
                field("jwks_url_token_file"),
            ];
            read.extend(
                kubernetes
                    .get("public_key_files")
                    .and_then(|files| files.as_array())
                    .into_iter()
                    .flatten()
                    .map(|file| Some(file.as_str().unwrap().to_owned())),
            );
            for path in read.into_iter().flatten() {
                let path = path.as_str();
                if path.starts_with(TOKEN_DIR) {
                    // Kubernetes mounts the service account's token there
                    // unless the pod or the account says not to.
                    let account = spec
                        .get("serviceAccountName")
                        .and_then(|v| v.as_str())
                        .unwrap_or("default");
                    let account_off = objects.iter().any(|o| {
                        o.kind == "ServiceAccount"
                            && o.name == account
                            && o.namespace == object.namespace
                            && o.doc.get("automountServiceAccountToken") == Some(&false.into())
                    });
                    let pod_off = spec.get("automountServiceAccountToken") == Some(&false.into());
                    assert!(
                        !pod_off && !account_off,
                        "{at}: [kubernetes] reads {path}, but service-account token mounting is disabled"
                    );
                } else {
                    assert!(
                        strings(container.get("volumeMounts"))
                            .iter()
                            .any(|m| m["mountPath"]
                                .as_str()
                                .is_some_and(|dir| path.starts_with(&format!("{dir}/")))),
                        "{at}: [kubernetes] reads {path}, which nothing mounts"
                    );
                }
            }
            // Agents and workloads find these pods behind the Service they dial.
            for (service, namespace, from) in &dialed {
                if *namespace != object.namespace {
                    continue;
                }
                let found = objects
                    .iter()
                    .find(|o| o.file == object.file && o.kind == "Service" && o.name == *service)
                    .unwrap_or_else(|| {
                        panic!(
                            "{at}: {from} dials Service {service}, which {} does not define",
                            object.file
                        )
                    });
                assert!(
                    selects(found, object),
                    "{at}: its Service {service} does not select its pods"
                );
            }
        }
    }
    for file in ["server.yaml", "replicas.yaml"] {
        assert!(
            serving.iter().any(|f| f == file),
            "{file} runs certd serve: {serving:?}"
        );
    }
    // Each Service selects only its own file's pods.
    for service in objects.iter().filter(|o| o.kind == "Service") {
        for pods in objects.iter().filter(|o| pod_spec(o).is_some()) {
            if selects(service, pods) {
                assert_eq!(
                    pods.file, service.file,
                    "{}: Service {} also selects {} {} of {}",
                    service.file, service.name, pods.kind, pods.name, pods.file
                );
            }
        }
    }
}

/// The volume of `spec` that `container` mounts at `dir`.
fn mount_of<'a>(
    container: &serde_json::Value,
    spec: &'a serde_json::Value,
    dir: &str,
) -> Option<&'a serde_json::Value> {
    let mount = strings(container.get("volumeMounts"))
        .into_iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))?;
    strings(spec.get("volumes"))
        .into_iter()
        .find(|v| v["name"] == mount["name"])
}
