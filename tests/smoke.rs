mod support;
use support::*;

#[tokio::test]
async fn smoke() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    let r = get(&gate.url("/lounge"), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge", primary.url())
    );
    primary.set_mode(Mode::BoshDown).await;
    primary
        .wait_for(std::time::Duration::from_secs(3), |c| c.bosh_creates >= 3)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = get(&gate.url("/lounge"), &[]).await;
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge", backup.url())
    );
    println!("{:?}", primary.counts());
    gate.stop().await;
}
