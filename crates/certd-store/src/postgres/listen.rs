//! Following other replicas' changes: a dedicated connection that LISTENs
//! on `certd_changes` and hands each notification another process sent to
//! the change feed.
//!
//! A notification is `<origin> entry <id>`, `<origin> revoked <serial>`
//! `<origin> crl <number>`, `<origin> policy <version>` or
//! `<origin> federation <trust-domain>`.
//! PostgreSQL delivers every notification committed while the session
//! listens, so changes can only be missed while the connection is down;
//! after a reconnection the feed is told `Change::Missed`, and every cache
//! reloads.

use std::time::Duration;

use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::CHANNEL;
use crate::{Change, ChangeFeed};

/// Wait between attempts to reconnect.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// The notification payload for `change`, sent by `origin`; `None` for a
/// change other replicas need not hear of.
pub(super) fn encode(origin: &str, change: &Change) -> Option<String> {
    match change {
        Change::Entry { id } => Some(format!("{origin} entry {id}")),
        Change::Revoked { serial } => Some(format!("{origin} revoked {}", serial.to_hex())),
        Change::CrlPublished { number } => Some(format!("{origin} crl {number}")),
        Change::Policy { version } => Some(format!("{origin} policy {version}")),
        Change::Federation { trust_domain } => Some(format!("{origin} federation {trust_domain}")),
        Change::Reopened | Change::Missed => None,
    }
}

/// The change a payload names, unless `origin` (this process) sent it or
/// it does not parse.
fn decode(origin: &str, payload: &str) -> Option<Change> {
    let mut parts = payload.splitn(3, ' ');
    let (sender, kind, subject) = (parts.next()?, parts.next()?, parts.next()?);
    if sender == origin {
        return None;
    }
    match kind {
        "entry" => Some(Change::Entry {
            id: subject.to_owned(),
        }),
        "revoked" => subject
            .parse()
            .ok()
            .map(|serial| Change::Revoked { serial }),
        "crl" => subject
            .parse()
            .ok()
            .map(|number| Change::CrlPublished { number }),
        "federation" => Some(Change::Federation {
            trust_domain: subject.to_owned(),
        }),
        "policy" => subject
            .parse()
            .ok()
            .map(|version| Change::Policy { version }),
        _ => None,
    }
}

/// Listens until the task is aborted, reconnecting whenever the connection
/// is lost.
pub(super) async fn follow(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    origin: String,
    feed: ChangeFeed,
) {
    let mut reconnected = false;
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (notifications, mut received) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(notification)) => {
                                if notifications.send(notification).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(error = %certd_core::error_kind::with_causes(&error), "the change feed's database connection failed");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if reconnected {
                            tracing::info!("the change feed is back; reloading caches");
                            feed.announce(Change::Missed);
                        }
                        while let Some(notification) = received.recv().await {
                            if let Some(change) = decode(&origin, notification.payload()) {
                                feed.announce(change);
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %certd_core::error_kind::with_causes(&error), "cannot LISTEN for changes")
                    }
                }
                driver.abort();
                drop(client);
                tracing::warn!("lost the change feed's database connection; reconnecting");
            }
            Err(error) => {
                tracing::warn!(error = %certd_core::error_kind::with_causes(&error), "cannot connect the change feed to the database; retrying");
            }
        }
        reconnected = true;
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certd_core::identity::Serial;

    #[test]
    fn notifications_round_trip_and_skip_their_sender() {
        let serial = Serial::generate();
        for change in [
            Change::Entry {
                id: "0a1b2c3d".into(),
            },
            Change::Revoked {
                serial: serial.clone(),
            },
            Change::CrlPublished { number: 42 },
        ] {
            let payload = encode("aa", &change).unwrap();
            assert_eq!(decode("bb", &payload), Some(change));
            assert_eq!(decode("aa", &payload), None, "our own");
        }
        assert_eq!(decode("bb", "aa revoked not-hex"), None);
        assert_eq!(decode("bb", "garbage"), None);
        assert_eq!(encode("aa", &Change::Missed), None);
    }
}
