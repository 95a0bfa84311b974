//! Defaults filled in for what a file leaves out, and files that give every
//! field.

use super::*;

#[test]
fn defaults_are_filled_in() {
    let config = ok("servers:\n  a:\n    url: https://a.example:8443/\n  \
         b:\n    url: http://b.example/jitsi\n    label: Bee\n    check:\n      kind: http\n\
         rooms:\n  One: {}\n  Two:\n    servers: [b, {server: a, room: Zwei}]\n");
    assert_eq!(config.site, Site::default());
    assert_eq!(config.site.title, "roomgate");

    let a = &config.servers[0];
    assert_eq!((a.name.as_str(), a.label.as_str()), ("a", "a"));
    assert_eq!(
        a.check,
        Check {
            kind: CheckKind::Jitsi {
                xmpp_domain: "a.example".to_owned(),
                depth: Depth::Bosh,
                guest_domain: None,
            },
            interval: secs(30),
            fast_interval: secs(2),
            timeout: secs(3),
            rise: 2,
            fall: 2,
        }
    );
    assert_eq!(a.check.interval, check_defaults::INTERVAL);
    assert_eq!(a.check.fast_interval, check_defaults::FAST_INTERVAL);
    assert_eq!(a.check.timeout, check_defaults::TIMEOUT);
    assert_eq!(
        (a.check.rise, a.check.fall),
        (check_defaults::RISE, check_defaults::FALL)
    );

    let b = &config.servers[1];
    assert_eq!(b.label, "Bee");
    assert_eq!(b.url, "http://b.example/jitsi");
    assert_eq!(
        b.check.kind,
        CheckKind::Http {
            path: "/".to_owned(),
            expect_status: StatusRange { min: 200, max: 200 },
            body_contains: None,
        }
    );
    assert_eq!(b.check.interval, secs(30));

    // no defaults.servers: every server in file order
    assert_eq!(config.defaults.servers, [target(0, ""), target(1, "")]);
    assert_eq!(config.defaults.redirect_status, 302);
    assert_eq!(config.defaults.when_all_down, WhenAllDown::First);
    // unlisted.servers follows defaults.servers
    assert!(!config.unlisted.allow);
    assert_eq!(config.unlisted.servers, config.defaults.servers);

    let one = room(&config, "One");
    assert_eq!(one.targets, [target(0, "One"), target(1, "One")]);
    assert_eq!(one.description, None);
    assert!(one.aliases.is_empty());
    // the rename ends up as Target.room
    assert_eq!(
        room(&config, "Two").targets,
        [target(1, "Two"), target(0, "Zwei")]
    );
}

#[test]
fn explicit_defaults_are_used_by_rooms_and_unlisted() {
    let config = ok(&format!(
        "{SERVERS}defaults:\n  servers: [b]\n  redirect_status: 307\n  when_all_down: page\n\
         unlisted:\n  allow: true\nrooms:\n  A: {{}}\n  B:\n    servers: [a, b]\n"
    ));
    assert_eq!(config.defaults.servers, [target(1, "")]);
    assert_eq!(config.defaults.when_all_down, WhenAllDown::Page);
    assert_eq!(config.defaults.redirect_status, 307);
    assert!(config.unlisted.allow);
    assert_eq!(config.unlisted.servers, [target(1, "")]);
    assert_eq!(room(&config, "A").targets, [target(1, "A")]);
    assert_eq!(room(&config, "B").targets, [target(0, "B"), target(1, "B")]);

    let config = ok(&format!(
        "{SERVERS}defaults:\n  servers: [b, a]\nunlisted:\n  servers: [a]\n"
    ));
    assert_eq!(config.defaults.servers, [target(1, ""), target(0, "")]);
    assert_eq!(config.unlisted.servers, [target(0, "")]);
    assert!(config.rooms.is_empty());
}

#[test]
fn every_field_given() {
    let config = ok("site:\n  title: T\n  intro: I\n  notice: N\n\
         servers:\n  j:\n    url: https://j.example\n    label: Jay\n    check:\n      kind: jitsi\n      \
         xmpp_domain: meet.jitsi\n      interval: 1m\n      fast_interval: 500ms\n      timeout: 5s\n      \
         rise: 3\n      fall: 4\n  h:\n    url: https://h.example\n    check:\n      kind: http\n      \
         path: /ping\n      expect_status: 200-299\n      body_contains: pong\n\
         rooms:\n  Lounge:\n    description: D\n    aliases: [treff, Cafe]\n");
    assert_eq!(
        config.site,
        Site {
            title: "T".to_owned(),
            intro: Some("I".to_owned()),
            notice: Some("N".to_owned()),
            ..Site::default()
        }
    );
    assert_eq!(
        config.servers[0].check,
        Check {
            kind: CheckKind::Jitsi {
                xmpp_domain: "meet.jitsi".to_owned(),
                depth: Depth::Bosh,
                guest_domain: None,
            },
            interval: secs(60),
            fast_interval: Duration::from_millis(500),
            timeout: secs(5),
            rise: 3,
            fall: 4,
        }
    );
    assert_eq!(config.servers[0].label, "Jay");
    assert_eq!(
        config.servers[1].check.kind,
        CheckKind::Http {
            path: "/ping".to_owned(),
            expect_status: StatusRange { min: 200, max: 299 },
            body_contains: Some("pong".to_owned()),
        }
    );
    let lounge = room(&config, "Lounge");
    assert_eq!(lounge.description.as_deref(), Some("D"));
    assert_eq!(lounge.aliases, ["treff", "Cafe"]);
}

#[test]
fn empty_sections_take_their_defaults() {
    let config = ok(&format!(
        "site:\n{ONE}    check:\n    label:\ndefaults:\nunlisted:\nrooms:\n"
    ));
    assert_eq!(config.site.title, "roomgate");
    assert_eq!(config.servers[0].label, "a");
    assert_eq!(config.servers[0].check.interval, secs(30));
    assert_eq!(config.defaults.servers, [target(0, "")]);
    assert!(config.rooms.is_empty());
    let config = ok(&format!("{ONE}rooms:\n  A:\n  B:\n    aliases:\n"));
    assert_eq!(config.rooms[0].targets, [target(0, "A")]);
    assert!(config.rooms[1].aliases.is_empty());
}
