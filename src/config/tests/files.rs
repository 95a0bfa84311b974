//! Files the config names (`ca_file`), and the routes.yaml of the repository,
//! which is also the built-in one.

use super::*;

fn ca_config(ca_file: &str) -> String {
    format!("{ONE}    ca_file: {ca_file}\n")
}

fn self_signed_pem() -> (String, Vec<u8>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (key.cert.pem(), key.cert.der().to_vec())
}

#[test]
fn ca_file_that_is_missing_names_the_resolved_path() {
    let dir = tempfile::tempdir().unwrap();
    let (line, column, message) =
        match Config::parse(&ca_config("certs/none.pem"), "routes.yaml", dir.path()) {
            Err(ConfigError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("{other:?}"),
        };
    assert_eq!((line, column), (4, 14));
    let resolved = dir.path().join("certs/none.pem");
    assert!(
        message.contains(&format!("ca_file `{}` cannot be read", resolved.display())),
        "{message}"
    );
    // with base_dir ".", the path is relative to "."
    assert_err(
        &ca_config("none.pem"),
        4,
        14,
        "ca_file `./none.pem` cannot be read",
    );
}

#[test]
fn ca_file_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("text.pem"), "no certificates here\n").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    for name in ["text.pem", "key.pem", "empty.pem"] {
        match Config::parse(&ca_config(name), "routes.yaml", dir.path()) {
            Err(ConfigError::Invalid {
                line: 4,
                column: 14,
                message,
                ..
            }) => {
                let path = dir.path().join(name);
                assert!(
                    message.contains(&format!(
                        "ca_file `{}` holds no `BEGIN CERTIFICATE` block",
                        path.display()
                    )),
                    "{message}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn ca_file_with_broken_pem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.pem"),
        "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    match Config::parse(&ca_config("bad.pem"), "routes.yaml", dir.path()) {
        Err(ConfigError::Invalid {
            line: 4,
            column: 14,
            message,
            ..
        }) => assert!(message.contains("ca_file `"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ca_file_with_certificates_relative_to_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (pem1, der1) = self_signed_pem();
    let (pem2, der2) = self_signed_pem();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/one.pem"), &pem1).unwrap();
    std::fs::write(dir.path().join("certs/two.pem"), format!("{pem1}{pem2}")).unwrap();

    let config = Config::parse(&ca_config("certs/one.pem"), "routes.yaml", dir.path()).unwrap();
    assert_eq!(config.servers[0].extra_roots.len(), 1);
    assert_eq!(config.servers[0].extra_roots[0].as_ref(), der1.as_slice());

    let config = Config::parse(&ca_config("certs/two.pem"), "routes.yaml", dir.path()).unwrap();
    let roots: Vec<&[u8]> = config.servers[0]
        .extra_roots
        .iter()
        .map(|c| c.as_ref())
        .collect();
    assert_eq!(roots, [der1.as_slice(), der2.as_slice()]);

    // an absolute path ignores base_dir
    let absolute = dir.path().join("certs/one.pem");
    let config = ok(&ca_config(&format!("\"{}\"", absolute.display())));
    assert_eq!(config.servers[0].extra_roots.len(), 1);

    // the same relative path from another base_dir is not found
    assert_err(&ca_config("certs/one.pem"), 4, 14, "cannot be read");

    // without ca_file: no extra roots
    assert!(ok(ONE).servers[0].extra_roots.is_empty());
}

#[test]
fn load_resolves_ca_file_against_the_file_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, der) = self_signed_pem();
    std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, ca_config("ca.pem")).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.servers[0].extra_roots[0].as_ref(), der.as_slice());
}

#[test]
fn repository_routes_yaml_is_the_builtin_and_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), BUILTIN_ROUTES);
    assert_eq!(config.rooms.len(), Config::builtin().rooms.len());
}

#[test]
fn builtin_holds_the_chaosdorf_rooms() {
    let config = Config::builtin();
    assert_eq!(config.site.title, "Chaosdorf VirtualSpace");
    assert!(config
        .site
        .intro
        .as_deref()
        .unwrap()
        .contains("virtuellen Raum"));
    assert!(config
        .site
        .notice
        .as_deref()
        .unwrap()
        .contains("Jitsiquette"));
    // The seed's texts in full: the password sentence as the wiki has it,
    // the self-hosting guides by the addresses the wiki gives.
    assert_eq!(config.site.lang, crate::lang::Lang::De);
    assert!(config.site.notice.as_deref().unwrap().ends_with(
        "Nach dem Lesen wird dir unser geheimes Passwort bekannt sein. Es lautet raumstation."
    ));
    let urls: Vec<&str> = config.site.links.iter().map(|l| l.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://jitsi.github.io/handbook/docs/devops-guide/devops-guide-quickstart",
            "https://jitsi.github.io/handbook/docs/devops-guide/devops-guide-manual",
            "https://www.golem.de/news/homeoffice-videokonferenzen-auf-eigenen-servern-mit-jitsi-meet-2003-147239.html",
        ]
    );

    let servers: Vec<(&str, &str)> = config
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.url.as_str()))
        .collect();
    assert_eq!(
        servers,
        [
            ("chaosdorf", "https://virtual.chaosdorf.space"),
            ("ffmuc", "https://meet.ffmuc.net")
        ]
    );
    let (chaosdorf, ffmuc) = (
        server_index(&config, "chaosdorf").unwrap(),
        server_index(&config, "ffmuc").unwrap(),
    );
    assert_eq!(config.servers[ffmuc].label, "Freifunk München");
    assert_eq!(config.servers[ffmuc].check.interval, secs(60));
    assert_eq!(config.servers[chaosdorf].check.interval, secs(30));

    let names: Vec<&str> = config.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Lounge", "Hackcenter", "Cave", "Freitagsfoo"]);
    for name in ["Lounge", "Hackcenter", "Cave"] {
        assert_eq!(
            room(&config, name).targets,
            [target(chaosdorf, name), target(ffmuc, name)],
            "{name}"
        );
    }
    assert_eq!(
        room(&config, "Freitagsfoo").targets,
        [target(ffmuc, "Freitagsfoo")]
    );
    let lounge = room(&config, "Lounge").description.as_deref().unwrap();
    assert!(lounge.contains("Treffpunkt"), "{lounge}");
    for r in &config.rooms {
        assert!(
            r.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{}",
            r.name
        );
    }
    assert!(room(&config, "Hackcenter")
        .description
        .as_deref()
        .unwrap()
        .contains("Gruppentreffen"));
    assert!(room(&config, "Cave")
        .description
        .as_deref()
        .unwrap()
        .contains("Hinterzimmer"));
    assert_eq!(config.defaults.redirect_status, 302);
    assert_eq!(config.defaults.when_all_down, WhenAllDown::First);
    assert!(!config.unlisted.allow);
    assert_eq!(
        config.unlisted.servers,
        [target(chaosdorf, ""), target(ffmuc, "")]
    );
}

/// The README's excerpt of routes.yaml and its example error stay true to
/// the shipped file.
#[test]
fn readme_examples_match_the_shipped_routes_yaml() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();

    // The excerpt: same servers, rooms and room servers; its `...` texts
    // stand for the German ones.
    let excerpt = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```yaml block in README.md");
    let excerpt = Config::parse(excerpt, "README.md", root).unwrap_or_else(|e| panic!("{e}"));
    let shipped = Config::builtin();
    let servers = |c: &Config| -> Vec<(String, String, String)> {
        c.servers
            .iter()
            .map(|s| (s.name.clone(), s.url.clone(), s.label.clone()))
            .collect()
    };
    assert_eq!(servers(&excerpt), servers(&shipped));
    let rooms = |c: &Config| -> Vec<(String, Vec<String>, Vec<Target>)> {
        c.rooms
            .iter()
            .map(|r| (r.name.clone(), r.aliases.clone(), r.targets.clone()))
            .collect()
    };
    assert_eq!(rooms(&excerpt), rooms(&shipped));
    assert_eq!(excerpt.defaults, shipped.defaults);
    assert_eq!(excerpt.site.lang, shipped.site.lang);

    // The example error: the shipped file with the typo the README names.
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("routes.yaml:") && l.contains("ffmcu"))
        .expect("the example error in README.md")
        .trim();
    let typo = BUILTIN_ROUTES.replace("servers: [ffmuc]", "servers: [ffmcu]");
    let error = Config::parse(&typo, "routes.yaml", root).unwrap_err();
    assert_eq!(error.to_string(), line);
}
