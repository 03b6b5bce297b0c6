//! One behaviour suite for every `Storage` backend: each backend's tests
//! run these same cases against it (`storage_behaviour_suite!`), so a new
//! backend proves the guarantees the rest of certd relies on.

use crate::{
    AcmeObject, Attestation, CertificateCursor, CertificatePage, CertificateQuery,
    DelegationRecord, EndpointProfile, EntryRecord, FederationRecord, ForeignBundle, GrantCaller,
    GrantRecord, IssuanceRecord, JoinTokenRecord, PolicyRecord, SharedStorage, StoreError,
    Successor,
};
use certd_core::identity::Serial;
use certd_core::selector::Selector;

/// A backend under test: opens a store, and opens it again on the same
/// data (a restart) once the previous handle is dropped.
#[async_trait::async_trait]
pub(crate) trait Backend: Sync {
    async fn open(&self) -> SharedStorage;
}

/// Runs every case of the suite as its own test, against the backend that
/// `$make()` returns (a fresh one per case; `None` skips the case, for a
/// backend whose server is not installed here).
#[macro_export]
#[doc(hidden)]
macro_rules! storage_behaviour_suite {
    ($make:ident) => {
        #[tokio::test]
        async fn records_survive_reopening_and_are_indexed_by_service() {
            if let Some(backend) = $make() {
                suite::records_survive_reopening_and_are_indexed_by_service(&backend).await;
            }
        }
        #[tokio::test]
        async fn a_token_is_consumed_exactly_once_with_its_record() {
            if let Some(backend) = $make() {
                suite::a_token_is_consumed_exactly_once_with_its_record(&backend).await;
            }
        }
        #[tokio::test]
        async fn a_taken_serial_is_refused_and_nothing_changes() {
            if let Some(backend) = $make() {
                suite::a_taken_serial_is_refused_and_nothing_changes(&backend).await;
            }
        }
        #[tokio::test]
        async fn listings_keep_the_newest_records_first() {
            if let Some(backend) = $make() {
                suite::listings_keep_the_newest_records_first(&backend).await;
            }
        }
        #[tokio::test]
        async fn pages_cover_every_record_once_newest_first() {
            if let Some(backend) = $make() {
                suite::pages_cover_every_record_once_newest_first(&backend).await;
            }
        }
        #[tokio::test]
        async fn filtered_pages_list_what_matches_within_their_budget() {
            if let Some(backend) = $make() {
                suite::filtered_pages_list_what_matches_within_their_budget(&backend).await;
            }
        }
        #[tokio::test]
        async fn listings_by_expiry_examine_what_they_return() {
            if let Some(backend) = $make() {
                suite::listings_by_expiry_examine_what_they_return(&backend).await;
            }
        }
        #[tokio::test]
        async fn expired_tokens_are_purged() {
            if let Some(backend) = $make() {
                suite::expired_tokens_are_purged(&backend).await;
            }
        }
        #[tokio::test]
        async fn entries_are_durable_unique_by_id_and_removable() {
            if let Some(backend) = $make() {
                suite::entries_are_durable_unique_by_id_and_removable(&backend).await;
            }
        }
        #[tokio::test]
        async fn tokens_are_listed_and_crl_numbers_can_be_raised() {
            if let Some(backend) = $make() {
                suite::tokens_are_listed_and_crl_numbers_can_be_raised(&backend).await;
            }
        }
        #[tokio::test]
        async fn revocations_keep_the_first_and_crl_numbers_only_grow() {
            if let Some(backend) = $make() {
                suite::revocations_keep_the_first_and_crl_numbers_only_grow(&backend).await;
            }
        }
        #[tokio::test]
        async fn a_lineage_link_changes_only_from_what_the_caller_saw() {
            if let Some(backend) = $make() {
                suite::a_lineage_link_changes_only_from_what_the_caller_saw(&backend).await;
            }
        }
        #[tokio::test]
        async fn the_policy_is_replaced_only_from_the_version_the_caller_saw() {
            if let Some(backend) = $make() {
                suite::the_policy_is_replaced_only_from_the_version_the_caller_saw(&backend).await;
            }
        }
        #[tokio::test]
        async fn a_federation_is_kept_and_its_bundle_never_goes_back() {
            if let Some(backend) = $make() {
                suite::a_federation_is_kept_and_its_bundle_never_goes_back(&backend).await;
            }
        }
        #[tokio::test]
        async fn an_acme_object_changes_only_from_what_the_caller_saw() {
            if let Some(backend) = $make() {
                suite::an_acme_object_changes_only_from_what_the_caller_saw(&backend).await;
            }
        }
        #[tokio::test]
        async fn an_acme_nonce_is_consumed_once_and_expired_acme_state_is_purged() {
            if let Some(backend) = $make() {
                suite::an_acme_nonce_is_consumed_once_and_expired_acme_state_is_purged(&backend)
                    .await;
            }
        }
        #[tokio::test]
        async fn the_bundle_sequence_grows_with_every_change_across_reopening() {
            if let Some(backend) = $make() {
                suite::the_bundle_sequence_grows_with_every_change_across_reopening(&backend).await;
            }
        }
        // Retention (issue 29): kept together for merging.
        #[tokio::test]
        async fn retention_purges_old_records_with_everything_that_names_them() {
            if let Some(backend) = $make() {
                suite::retention_purges_old_records_with_everything_that_names_them(&backend).await;
            }
        }
        #[tokio::test]
        async fn retention_purges_audit_entries_oldest_first_in_bounded_steps() {
            if let Some(backend) = $make() {
                suite::retention_purges_audit_entries_oldest_first_in_bounded_steps(&backend).await;
            }
        }
    };
}

pub(crate) fn record(service: &str) -> IssuanceRecord {
    IssuanceRecord {
        serial: Serial::generate(),
        service: service.parse().unwrap(),
        dns_names: vec![format!("{service}.certd.internal")],
        uris: vec![format!("spiffe://certd.internal/svc/{service}")],
        not_before: 100,
        not_after: 200,
        issued_at: 160,
        sha256_fingerprint: [7; 32],
        der: vec![1, 2, 3],
        attestation: Attestation::Renewal,
        renewed_from: None,
        revocation: None,
    }
}

fn token(service: &str, expires_at: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        selectors: vec![Selector::from_stored(format!("token:{service}"))],
        created_at: 0,
        expires_at,
    }
}

pub(crate) async fn records_survive_reopening_and_are_indexed_by_service(backend: &dyn Backend) {
    let billing = record("billing");
    let billing_2 = record("billing-2");
    {
        let store = backend.open().await;
        store.record_issuance(&billing, None).await.unwrap();
        store.record_issuance(&billing_2, None).await.unwrap();
    }
    let store = backend.open().await;
    assert_eq!(
        store.certificate(&billing.serial).await.unwrap(),
        Some(billing.clone())
    );
    let service = "billing".parse().unwrap();
    assert_eq!(
        store.certificates(Some(&service)).await.unwrap(),
        vec![billing]
    );
    assert_eq!(store.certificates(None).await.unwrap().len(), 2);
}

pub(crate) async fn a_token_is_consumed_exactly_once_with_its_record(backend: &dyn Backend) {
    let store = backend.open().await;
    let hash = [9u8; 32];
    store
        .insert_join_tokens(&[(hash, token("billing", 1_000))])
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        attempts.push(tokio::spawn(async move {
            store.record_issuance(&record("billing"), Some(&hash)).await
        }));
    }
    let mut succeeded = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => succeeded += 1,
            Err(StoreError::TokenAlreadyUsed) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(succeeded, 1);
    assert_eq!(store.record_count().await.unwrap(), 1);
    assert_eq!(store.join_token(&hash).await.unwrap(), None);
}

pub(crate) async fn a_taken_serial_is_refused_and_nothing_changes(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = record("billing");
    store.record_issuance(&first, None).await.unwrap();
    let hash = [3u8; 32];
    store
        .insert_join_tokens(&[(hash, token("payments", 1_000))])
        .await
        .unwrap();
    let mut clash = record("payments");
    clash.serial = first.serial.clone();
    let outcome = store.record_issuance(&clash, Some(&hash)).await;
    assert!(
        matches!(outcome, Err(StoreError::SerialTaken(_))),
        "{outcome:?}"
    );
    assert_eq!(store.certificate(&first.serial).await.unwrap(), Some(first));
    assert!(
        store.join_token(&hash).await.unwrap().is_some(),
        "the token was not consumed"
    );
    assert_eq!(
        store
            .certificates(Some(&"payments".parse().unwrap()))
            .await
            .unwrap(),
        vec![]
    );
}

pub(crate) async fn listings_keep_the_newest_records_first(backend: &dyn Backend) {
    let store = backend.open().await;
    for (issued_at, service) in [
        (1, "billing"),
        (5, "payments"),
        (3, "billing"),
        (4, "billing"),
        (2, "orders"),
    ] {
        let mut record = record(service);
        record.issued_at = issued_at;
        store.record_issuance(&record, None).await.unwrap();
    }
    let times =
        |records: Vec<IssuanceRecord>| records.iter().map(|r| r.issued_at).collect::<Vec<_>>();
    let billing = "billing".parse().unwrap();
    assert_eq!(
        times(store.newest_certificates(Some(&billing), 2).await.unwrap()),
        [4, 3]
    );
    assert_eq!(
        times(store.newest_certificates(Some(&billing), 10).await.unwrap()),
        [4, 3, 1]
    );
    assert_eq!(
        times(store.newest_certificates(None, 3).await.unwrap()),
        [5, 4, 3]
    );
    assert_eq!(
        times(store.newest_certificates(None, 0).await.unwrap()),
        Vec::<i64>::new()
    );
}

/// Walks every page of `query` (through `listing::page_within` with
/// `budget`), checking each examined at most `most_examined` index entries;
/// the records in the order the pages gave them.
async fn walk_pages(
    store: &SharedStorage,
    mut query: CertificateQuery,
    budget: usize,
    most_examined: usize,
) -> Vec<IssuanceRecord> {
    let mut listed = Vec::new();
    for _ in 0..1000 {
        let page = crate::listing::page_within(&**store, &query, budget)
            .await
            .unwrap();
        let examined = page.examined;
        assert!(
            examined <= most_examined,
            "a page of {} examined {examined} index entries",
            query.limit
        );
        assert!(page.records.len() <= query.limit);
        listed.extend(page.records);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return listed,
        }
    }
    panic!("the pages never ended");
}

fn positions(records: &[IssuanceRecord]) -> Vec<(i64, Serial)> {
    records
        .iter()
        .map(|r| (r.issued_at, r.serial.clone()))
        .collect()
}

/// Newest first: by time, then by serial, as the pages go.
fn newest_first(records: &[IssuanceRecord]) -> Vec<(i64, Serial)> {
    let mut positions = positions(records);
    positions.sort();
    positions.reverse();
    positions
}

/// A record's place in a listing's order: its time in that order, then
/// its serial.
type Position = (i64, Serial);

fn expiry_positions(records: &[IssuanceRecord]) -> Vec<(i64, Serial)> {
    records
        .iter()
        .map(|r| (r.not_after, r.serial.clone()))
        .collect()
}

/// Latest expiry first, then by serial: a listing by expiry's order.
fn latest_expiry_first(records: &[IssuanceRecord]) -> Vec<(i64, Serial)> {
    let mut positions = expiry_positions(records);
    positions.sort();
    positions.reverse();
    positions
}

/// `records` as positions in the order `query` lists them, and sorted so.
fn in_query_order(
    query: &CertificateQuery,
    listed: &[IssuanceRecord],
    expected: &[IssuanceRecord],
) -> (Vec<Position>, Vec<Position>) {
    match query.order() {
        crate::ListingOrder::Issued => (positions(listed), newest_first(expected)),
        crate::ListingOrder::Expiry => (expiry_positions(listed), latest_expiry_first(expected)),
    }
}

pub(crate) async fn pages_cover_every_record_once_newest_first(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut written = Vec::new();
    for i in 0..30 {
        // Three records a second: ties are ordered by serial.
        let mut record = record(if i % 2 == 0 { "billing" } else { "orders" });
        record.issued_at = i / 3;
        store.record_issuance(&record, None).await.unwrap();
        written.push(record);
    }
    let first = store
        .certificate_page(&CertificateQuery::newest(7, 0))
        .await
        .unwrap();
    assert_eq!(first.records.len(), 7);
    // Issuances go on while the pages are read: newer than the first page,
    // they belong to no later one, and move none of the records written
    // before from one page to another.
    let issuing = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let mut record = record("billing");
                record.issued_at = 1_000;
                store.record_issuance(&record, None).await.unwrap();
            }
        })
    };
    let mut query = CertificateQuery::newest(7, 0);
    query.after = first.next.clone();
    let mut listed = first.records;
    // Unfiltered, a page examines exactly the entries it returns.
    listed.extend(walk_pages(&store, query, 1, 7).await);
    issuing.await.unwrap();
    assert_eq!(positions(&listed), newest_first(&written));

    let billing: certd_core::identity::ServiceName = "billing".parse().unwrap();
    let mut query = CertificateQuery::newest(4, 0);
    query.service = Some(billing.clone());
    let billing_written: Vec<_> = written
        .iter()
        .filter(|r| r.service == billing)
        .cloned()
        .collect();
    let listed = walk_pages(&store, query, 1, 4).await;
    let mut expected = newest_first(&billing_written);
    expected.retain(|position| position.0 < 1_000);
    let listed: Vec<_> = positions(&listed)
        .into_iter()
        .filter(|position| position.0 < 1_000)
        .collect();
    assert_eq!(listed, expected);

    // A cursor at a position no record holds continues below it; a page
    // that ends the walk carries no cursor.
    let mut query = CertificateQuery::newest(100, 0);
    query.after = Some(CertificateCursor {
        order: crate::ListingOrder::Issued,
        at: 5,
        serial: "01".parse().unwrap(),
    });
    let page = store.certificate_page(&query).await.unwrap();
    assert_eq!(
        positions(&page.records),
        newest_first(&written)
            .into_iter()
            .filter(|position| position.0 < 5)
            .collect::<Vec<_>>()
    );
    assert_eq!(page.next, None);
    query.limit = 0;
    assert_eq!(
        store.certificate_page(&query).await.unwrap(),
        CertificatePage::default()
    );
}

pub(crate) async fn filtered_pages_list_what_matches_within_their_budget(backend: &dyn Backend) {
    use crate::{CertificateState, Revocation};
    let store = backend.open().await;
    let now = 1_000;
    let mut written = Vec::new();
    for i in 0..40i64 {
        let mut record = record(if i % 5 == 0 { "billing" } else { "orders" });
        record.issued_at = i;
        record.not_after = match i % 3 {
            0 => 500,
            1 => now + i * 10,
            _ => 5_000,
        };
        store.record_issuance(&record, None).await.unwrap();
        if i % 4 == 0 {
            let revocation = Revocation {
                revoked_at: 900,
                reason_code: 1,
            };
            store.revoke(&record.serial, revocation).await.unwrap();
            record.revocation = Some(revocation);
        }
        written.push(record);
    }
    let billing: certd_core::identity::ServiceName = "billing".parse().unwrap();
    let queries = [
        (Some(billing.clone()), Some(CertificateState::Revoked), None),
        (None, Some(CertificateState::Good), None),
        (None, Some(CertificateState::Revoked), None),
        (None, Some(CertificateState::Expired), None),
        (None, None, Some(now + 200)),
        (Some(billing.clone()), Some(CertificateState::Good), None),
        (Some(billing), None, Some(now + 10_000)),
    ];
    for (service, state, expiring_by) in queries {
        let query = CertificateQuery {
            service: service.clone(),
            state,
            expiring_by,
            now,
            after: None,
            limit: 3,
        };
        let mut expected: Vec<_> = written
            .iter()
            .filter(|r| service.as_ref().is_none_or(|s| r.service == *s) && query.matches(r))
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "{query:?} matches nothing");
        // A budget of 8 entries a page: each page stops there, with a
        // cursor, whatever it found. Revoked ones have an index of their
        // own: a page of them examines only what it returns.
        let most_examined = if state == Some(CertificateState::Revoked) && expiring_by.is_none() {
            3
        } else {
            8
        };
        let listed = walk_pages(&store, query.clone(), 8, most_examined).await;
        let (listed, wanted) = in_query_order(&query, &listed, &expected);
        assert_eq!(listed, wanted, "{query:?}");
        // The same with the backend's own budget, through the trait.
        let mut all = query.clone();
        all.limit = 100;
        let page = store.certificate_page(&all).await.unwrap();
        match query.order() {
            crate::ListingOrder::Issued => {
                expected.sort_by(|a, b| (b.issued_at, &b.serial).cmp(&(a.issued_at, &a.serial)))
            }
            crate::ListingOrder::Expiry => {
                expected.sort_by(|a, b| (b.not_after, &b.serial).cmp(&(a.not_after, &a.serial)))
            }
        }
        assert_eq!(page.records, expected, "{query:?}");
        assert_eq!(page.next, None);
    }
}

/// A listing of every service by expiry state or window is a range of the
/// expiry index: a page examines what it returns (and the revoked
/// certificates in its range), however the matches lie in issuance order.
/// Here one certificate in ten has expired, spread through the issuance
/// order; by issuance order a page of 5 expired ones would examine ~50.
pub(crate) async fn listings_by_expiry_examine_what_they_return(backend: &dyn Backend) {
    use crate::{CertificateState, Revocation};
    let store = backend.open().await;
    let now = 100_000;
    let mut written = Vec::new();
    for i in 0..300i64 {
        let mut record = record(if i % 2 == 0 { "billing" } else { "orders" });
        record.issued_at = i;
        record.not_after = if i % 10 == 0 {
            now - 1_000 + i
        } else {
            now + 1_000 + i / 3
        };
        store.record_issuance(&record, None).await.unwrap();
        written.push(record);
    }
    // Two revoked among the expiring: skipped, each costing one entry.
    for record in &mut written[1..3] {
        let revocation = Revocation {
            revoked_at: now - 10,
            reason_code: 1,
        };
        store.revoke(&record.serial, revocation).await.unwrap();
        record.revocation = Some(revocation);
    }
    let cases = [
        (Some(CertificateState::Expired), None, 5, 5),
        (None, Some(now + 1_000 + 20), 5, 7),
        (Some(CertificateState::Good), None, 50, 52),
        (Some(CertificateState::Good), Some(now + 1_000 + 20), 4, 6),
    ];
    for (state, expiring_by, limit, most_examined) in cases {
        let query = CertificateQuery {
            service: None,
            state,
            expiring_by,
            now,
            after: None,
            limit,
        };
        assert_eq!(query.order(), crate::ListingOrder::Expiry);
        let expected: Vec<_> = written
            .iter()
            .filter(|r| query.matches(r))
            .cloned()
            .collect();
        assert!(expected.len() > limit, "{query:?}");
        let listed = walk_pages(&store, query.clone(), 10_000, most_examined).await;
        assert_eq!(
            expiry_positions(&listed),
            latest_expiry_first(&expected),
            "{query:?}"
        );
    }
}

pub(crate) async fn expired_tokens_are_purged(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .insert_join_tokens(&[([1; 32], token("a", 10))])
        .await
        .unwrap();
    store
        .insert_join_tokens(&[([2; 32], token("b", 1_000))])
        .await
        .unwrap();
    assert_eq!(store.purge_expired_tokens(500).await.unwrap(), 1);
    assert_eq!(store.join_token_count().await.unwrap(), 1);
    assert!(store.join_token(&[2; 32]).await.unwrap().is_some());

    // Revoked by an operator: gone, counted once, unknown hashes ignored.
    store
        .insert_join_tokens(&[([3; 32], token("c", 1_000)), ([4; 32], token("d", 1_000))])
        .await
        .unwrap();
    assert_eq!(
        store
            .remove_join_tokens(&[[2; 32], [3; 32], [9; 32]])
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.remove_join_tokens(&[[2; 32]]).await.unwrap(), 0);
    assert!(store.join_token(&[3; 32]).await.unwrap().is_none());
    assert!(store.join_token(&[4; 32]).await.unwrap().is_some());
    assert_eq!(store.join_token_count().await.unwrap(), 1);
}

pub(crate) async fn entries_are_durable_unique_by_id_and_removable(backend: &dyn Backend) {
    let entry = EntryRecord {
        id: "e1".into(),
        service: "billing".parse().unwrap(),
        spiffe_id: "spiffe://certd.internal/svc/billing".parse().unwrap(),
        dns_names: vec!["billing.certd.internal".parse().unwrap()],
        ttl_seconds: Some(3600),
        selectors: vec![Selector::from_stored("k8s:ns:payments".into())],
        created_at: 1,
        created_by: "test".into(),
        parent: Some("spiffe://certd.internal/agent/node-1".parse().unwrap()),
        jwt_audiences: vec!["gateway".into()],
        federates_with: vec!["partner.example".parse().unwrap()],
    };
    {
        let store = backend.open().await;
        assert!(store.insert_entry(&entry).await.unwrap());
        let mut clash = entry.clone();
        clash.service = "orders".parse().unwrap();
        assert!(!store.insert_entry(&clash).await.unwrap());
    }
    let store = backend.open().await;
    assert_eq!(store.entries().await.unwrap(), vec![entry.clone()]);
    assert_eq!(store.remove_entry("e1").await.unwrap(), Some(entry));
    assert_eq!(store.remove_entry("e1").await.unwrap(), None);
    assert!(store.entries().await.unwrap().is_empty());
}

pub(crate) async fn revocations_keep_the_first_and_crl_numbers_only_grow(backend: &dyn Backend) {
    use crate::{Revocation, RevokeOutcome};
    let live = record("billing");
    let mut expired = record("orders");
    expired.not_after = 50;
    let first = Revocation {
        revoked_at: 150,
        reason_code: 1,
    };
    let numbers = {
        let store = backend.open().await;
        for record in [&live, &expired] {
            store.record_issuance(record, None).await.unwrap();
        }
        assert_eq!(store.marks().await.unwrap().revocations, 0);
        assert_eq!(
            store.revoke(&Serial::generate(), first).await.unwrap(),
            None,
            "an unknown serial"
        );
        let outcome = store.revoke(&live.serial, first).await.unwrap().unwrap();
        assert!(matches!(outcome, RevokeOutcome::Revoked(_)));
        let again = Revocation {
            revoked_at: 160,
            reason_code: 4,
        };
        let outcome = store.revoke(&live.serial, again).await.unwrap().unwrap();
        assert!(
            matches!(&outcome, RevokeOutcome::AlreadyRevoked(r) if r.revocation == Some(first))
        );
        store.revoke(&expired.serial, first).await.unwrap();
        let listed = store.revoked_unexpired(100).await.unwrap();
        assert_eq!(listed.len(), 1, "the expired certificate leaves the CRL");
        assert_eq!(listed[0].serial, live.serial);
        assert_eq!(store.prune_expired_revocations(100).await.unwrap(), 1);
        let marks = store.marks().await.unwrap();
        assert_eq!(
            marks.revocations, 2,
            "revoking twice counts once; pruning the index forgets nothing"
        );
        assert!(marks.has_records);
        assert!(marks.records.is_none_or(|records| records == 2));
        let a = store.next_crl_number().await.unwrap();
        let b = store.next_crl_number().await.unwrap();
        assert!(b > a);
        b
    };
    let store = backend.open().await;
    assert!(
        store.next_crl_number().await.unwrap() > numbers,
        "after a restart too"
    );
    let record = store.certificate(&live.serial).await.unwrap().unwrap();
    assert_eq!(record.revocation, Some(first), "the revocation is durable");
}

pub(crate) async fn tokens_are_listed_and_crl_numbers_can_be_raised(backend: &dyn Backend) {
    let store = backend.open().await;
    let tokens = vec![
        ([1; 32], token("billing", 900)),
        ([2; 32], token("orders", 900)),
    ];
    store.insert_join_tokens(&tokens).await.unwrap();
    let mut listed = store.join_tokens().await.unwrap();
    listed.sort_by_key(|(hash, _)| *hash);
    assert_eq!(listed, tokens);
    // Many at once (on sled, many batches of its writes, and runs of
    // tokens sharing a record between tokens of another): all kept, each
    // with its own record.
    let many: Vec<_> = (0..2_500u32)
        .map(|n| {
            let mut hash = [9u8; 32];
            hash[..4].copy_from_slice(&n.to_be_bytes());
            let service = if n % 7 < 3 { "bulk" } else { "bulk-other" };
            (hash, token(service, 900))
        })
        .collect();
    store.insert_join_tokens(&many).await.unwrap();
    assert_eq!(
        store.join_tokens().await.unwrap().len(),
        tokens.len() + many.len()
    );
    for (hash, record) in &many {
        assert_eq!(store.join_token(hash).await.unwrap().as_ref(), Some(record));
    }

    let first = store.next_crl_number().await.unwrap();
    store.raise_crl_number(first + 100).await.unwrap();
    assert_eq!(store.next_crl_number().await.unwrap(), first + 101);
    // Raising to a lower number changes nothing.
    store.raise_crl_number(3).await.unwrap();
    assert_eq!(store.next_crl_number().await.unwrap(), first + 102);
}

/// Renewal lineage is a compare-and-swap: of two renewals of one
/// certificate racing, one wins; a link survives reopening and is listed.
pub(crate) async fn a_lineage_link_changes_only_from_what_the_caller_saw(backend: &dyn Backend) {
    let store = backend.open().await;
    let predecessor = Serial::generate();
    assert_eq!(store.successor(&predecessor).await.unwrap(), None);
    let first = Successor {
        serial: Serial::generate(),
        presented: false,
    };
    let second = Successor {
        serial: Serial::generate(),
        presented: false,
    };
    assert!(
        store
            .swap_successor(&predecessor, None, &first)
            .await
            .unwrap()
    );
    // A racer that also saw no successor loses.
    assert!(
        !store
            .swap_successor(&predecessor, None, &second)
            .await
            .unwrap()
    );
    // One that saw a different successor loses too.
    assert!(
        !store
            .swap_successor(&predecessor, Some(&second), &second)
            .await
            .unwrap()
    );
    let presented = Successor {
        presented: true,
        ..first.clone()
    };
    assert!(
        store
            .swap_successor(&predecessor, Some(&first), &presented)
            .await
            .unwrap()
    );
    // Marking it presented changed it: what was seen before no longer holds.
    assert!(
        !store
            .swap_successor(&predecessor, Some(&first), &second)
            .await
            .unwrap()
    );
    store.flush().await.unwrap();
    drop(store);

    let store = backend.open().await;
    assert_eq!(
        store.successor(&predecessor).await.unwrap(),
        Some(presented.clone())
    );
    assert_eq!(
        store.successors().await.unwrap(),
        vec![(predecessor, presented)]
    );
}

pub(crate) async fn the_policy_is_replaced_only_from_the_version_the_caller_saw(
    backend: &dyn Backend,
) {
    let first = PolicyRecord {
        version: 1,
        grants: vec![
            GrantRecord {
                name: "billing-invoices".into(),
                caller: GrantCaller::Service("billing".parse().unwrap()),
                audience: "invoices".into(),
                scopes: vec!["invoices:create".into(), "invoices:read".into()],
            },
            GrantRecord {
                name: "gateway-orders".into(),
                caller: GrantCaller::SpiffeId(
                    "spiffe://certd.internal/svc/gateway".parse().unwrap(),
                ),
                audience: "orders".into(),
                scopes: Vec::new(),
            },
        ],
        delegations: vec![DelegationRecord {
            name: "orders-for-users".into(),
            actor: GrantCaller::Service("orders".parse().unwrap()),
            subject_issuers: vec!["https://idp.example".into()],
            audience: "payments".into(),
            scopes: vec!["payments:charge".into()],
            max_chain: 2,
        }],
        changed_at: 5,
        changed_by: "test".into(),
    };
    {
        let store = backend.open().await;
        assert_eq!(store.policy().await.unwrap(), None);
        // Not from a version nobody stored, and never to an older one.
        assert!(!store.replace_policy(1, &first).await.unwrap());
        // Two writers racing for the first policy: exactly one wins.
        assert_eq!(race(&store, 0, &first).await, 1);
        let stored = store.policy().await.unwrap().unwrap();
        assert!(stored.changed_by.starts_with("racer "));
        assert!(!store.replace_policy(0, &first).await.unwrap());
        let older = PolicyRecord {
            version: 1,
            ..first.clone()
        };
        assert!(!store.replace_policy(1, &older).await.unwrap());
    }
    let store = backend.open().await;
    let reopened = store.policy().await.unwrap().unwrap();
    assert_eq!(
        (reopened.version, &reopened.grants, &reopened.delegations),
        (1, &first.grants, &first.delegations)
    );
    // Two writers racing from one version: exactly one wins.
    let next = PolicyRecord {
        version: 2,
        ..first.clone()
    };
    assert_eq!(race(&store, 1, &next).await, 1);
    let raced = store.policy().await.unwrap().unwrap();
    assert_eq!(raced.version, 2);
    let second = PolicyRecord {
        version: 3,
        grants: Vec::new(),
        ..first.clone()
    };
    assert!(store.replace_policy(2, &second).await.unwrap());
    assert_eq!(store.policy().await.unwrap(), Some(second));
}

/// Has two tasks replace the policy from `expected` with `policy` (each
/// naming itself in `changed_by`) at once; returns how many succeeded.
async fn race(store: &SharedStorage, expected: u64, policy: &PolicyRecord) -> usize {
    let racers: Vec<_> = (0..2)
        .map(|index| {
            let store = store.clone();
            let policy = PolicyRecord {
                changed_by: format!("racer {index}"),
                ..policy.clone()
            };
            tokio::spawn(async move { store.replace_policy(expected, &policy).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.unwrap());
    }
    wins
}

fn foreign_bundle(sequence: u64) -> ForeignBundle {
    ForeignBundle {
        sequence,
        refresh_hint: Some(300),
        json: format!(r#"{{"keys":[],"spiffe_sequence":{sequence}}}"#),
        accepted_at: 100 + i64::try_from(sequence).unwrap(),
    }
}

pub(crate) async fn a_federation_is_kept_and_its_bundle_never_goes_back(backend: &dyn Backend) {
    let partner: certd_core::identity::TrustDomain = "partner.example".parse().unwrap();
    let web = FederationRecord {
        trust_domain: partner.clone(),
        bundle_endpoint_url: "https://bundles.partner.example/bundle".into(),
        profile: EndpointProfile::HttpsWeb {
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n...".into()),
        },
        created_at: 5,
        created_by: "operator alice".into(),
        bundle: None,
    };
    let spiffe = FederationRecord {
        trust_domain: "acme.internal".parse().unwrap(),
        bundle_endpoint_url: "https://spire.acme.internal:8443".into(),
        profile: EndpointProfile::HttpsSpiffe {
            endpoint_id: "spiffe://acme.internal/spire/server".parse().unwrap(),
        },
        created_at: 6,
        created_by: "local admin socket".into(),
        bundle: Some(foreign_bundle(1)),
    };
    {
        let store = backend.open().await;
        assert!(store.insert_federation(&web).await.unwrap());
        assert!(store.insert_federation(&spiffe).await.unwrap());
        // One relationship per trust domain.
        assert!(!store.insert_federation(&web).await.unwrap());
        // The first bundle is taken, then only higher sequences.
        assert!(
            store
                .accept_foreign_bundle(&partner, &foreign_bundle(7))
                .await
                .unwrap()
        );
        assert!(
            !store
                .accept_foreign_bundle(&partner, &foreign_bundle(7))
                .await
                .unwrap()
        );
        assert!(
            !store
                .accept_foreign_bundle(&partner, &foreign_bundle(6))
                .await
                .unwrap()
        );
        let unknown: certd_core::identity::TrustDomain = "nobody.example".parse().unwrap();
        assert!(
            !store
                .accept_foreign_bundle(&unknown, &foreign_bundle(1))
                .await
                .unwrap()
        );
    }
    let store = backend.open().await;
    let kept = store.federation(&partner).await.unwrap().unwrap();
    assert_eq!(kept.bundle, Some(foreign_bundle(7)));
    assert_eq!(kept.profile, web.profile);
    let all = store.federations().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|f| f.trust_domain.as_str())
            .collect::<Vec<_>>(),
        ["acme.internal", "partner.example"]
    );
    assert_eq!(all[0], spiffe);
    assert!(
        store
            .accept_foreign_bundle(&partner, &foreign_bundle(8))
            .await
            .unwrap()
    );
    let removed = store.remove_federation(&partner).await.unwrap().unwrap();
    assert_eq!(removed.bundle, Some(foreign_bundle(8)));
    assert_eq!(store.remove_federation(&partner).await.unwrap(), None);
    assert_eq!(store.federation(&partner).await.unwrap(), None);
}

pub(crate) async fn the_bundle_sequence_grows_with_every_change_across_reopening(
    backend: &dyn Backend,
) {
    let (first, second) = ([1; 32], [2; 32]);
    {
        let store = backend.open().await;
        assert_eq!(store.stored_bundle_sequence().await.unwrap(), 0);
        assert_eq!(store.bundle_sequence(&first, 0).await.unwrap(), 1);
        // The same content keeps its sequence.
        assert_eq!(store.bundle_sequence(&first, 0).await.unwrap(), 1);
        assert_eq!(store.bundle_sequence(&second, 0).await.unwrap(), 2);
        // A floor raises it (a store that never saw the earlier sequence).
        assert_eq!(store.bundle_sequence(&second, 40).await.unwrap(), 40);
    }
    let store = backend.open().await;
    assert_eq!(store.bundle_sequence(&second, 0).await.unwrap(), 40);
    // Back to earlier content is a change too: never a lower number.
    assert_eq!(store.bundle_sequence(&first, 0).await.unwrap(), 41);
    assert_eq!(store.stored_bundle_sequence().await.unwrap(), 41);
}

fn acme_object(data: &str, expires_at: Option<i64>) -> AcmeObject {
    AcmeObject {
        expires_at,
        data: data.as_bytes().to_vec(),
    }
}

pub(crate) async fn an_acme_object_changes_only_from_what_the_caller_saw(backend: &dyn Backend) {
    let store = backend.open().await;
    let order = acme_object(r#"{"status":"ready"}"#, Some(1_000));
    assert!(
        store
            .swap_acme_object("order/a/1", None, Some(&order))
            .await
            .unwrap()
    );
    // Creating it again fails: something is there.
    assert!(
        !store
            .swap_acme_object("order/a/1", None, Some(&order))
            .await
            .unwrap()
    );

    // Two replicas finalize the same ready order at once: one wins.
    let racers: Vec<_> = (0..2)
        .map(|index| {
            let (store, order) = (store.clone(), order.clone());
            tokio::spawn(async move {
                let valid = acme_object(&format!(r#"{{"status":"valid","by":{index}}}"#), None);
                store
                    .swap_acme_object("order/a/1", Some(&order), Some(&valid))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.unwrap());
    }
    assert_eq!(wins, 1);
    let stored = store.acme_object("order/a/1").await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&stored.data).contains("valid"));
    assert_eq!(stored.expires_at, None);

    // A stale expectation (same bytes, another expiry) changes nothing.
    let stale = AcmeObject {
        expires_at: Some(5),
        ..stored.clone()
    };
    assert!(
        !store
            .swap_acme_object("order/a/1", Some(&stale), None)
            .await
            .unwrap()
    );

    // Listing by prefix, in key order, survives reopening.
    let account = acme_object("account", None);
    for key in ["account/b", "account/a", "accounts-not/x"] {
        assert!(
            store
                .swap_acme_object(key, None, Some(&account))
                .await
                .unwrap()
        );
    }
    drop(store);
    let store = backend.open().await;
    let listed: Vec<String> = store
        .acme_objects("account/")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(listed, ["account/a", "account/b"]);
    // `%` and `_` in a prefix are characters, not patterns.
    assert!(store.acme_objects("account%").await.unwrap().is_empty());
    // A page at a time: after a key (in the prefix or before it), at most
    // `limit`, never past the prefix.
    let page = |prefix: &'static str, after: Option<&'static str>, limit| {
        let store = store.clone();
        async move {
            store
                .acme_objects_page(prefix, after, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|(key, _)| key)
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(page("account/", None, 1).await, ["account/a"]);
    assert_eq!(page("account/", Some("account/a"), 5).await, ["account/b"]);
    assert_eq!(
        page("account/", Some("account/b"), 5).await,
        Vec::<String>::new()
    );
    assert_eq!(
        page("account/", Some("a"), 5).await,
        ["account/a", "account/b"]
    );
    assert_eq!(
        page("account/", Some("account/"), 0).await,
        Vec::<String>::new()
    );
    assert_eq!(page("account%", None, 5).await, Vec::<String>::new());
    assert_eq!(
        page("", Some("account/b"), 5).await,
        ["accounts-not/x", "order/a/1"]
    );
    assert_eq!(store.acme_objects("").await.unwrap().len(), 4);

    // Removing takes the current value.
    assert!(
        store
            .swap_acme_object("order/a/1", Some(&stored), None)
            .await
            .unwrap()
    );
    assert_eq!(store.acme_object("order/a/1").await.unwrap(), None);
}

pub(crate) async fn an_acme_nonce_is_consumed_once_and_expired_acme_state_is_purged(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    assert!(store.consume_acme_nonce(b"nonce-1", 100).await.unwrap());
    assert!(!store.consume_acme_nonce(b"nonce-1", 100).await.unwrap());
    assert!(store.consume_acme_nonce(b"nonce-2", 300).await.unwrap());
    for (key, expires_at) in [
        ("order/old", Some(100)),
        ("order/new", Some(300)),
        ("account/kept", None),
    ] {
        assert!(
            store
                .swap_acme_object(key, None, Some(&acme_object(key, expires_at)))
                .await
                .unwrap()
        );
    }
    drop(store);
    let store = backend.open().await;
    // Still consumed after reopening.
    assert!(!store.consume_acme_nonce(b"nonce-1", 100).await.unwrap());

    // One nonce and one order expired before 200.
    assert_eq!(store.purge_expired_acme(200).await.unwrap(), 2);
    let left: Vec<String> = store
        .acme_objects("")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(left, ["account/kept", "order/new"]);
    assert!(!store.consume_acme_nonce(b"nonce-2", 300).await.unwrap());
    assert_eq!(store.purge_expired_acme(200).await.unwrap(), 0);
}

// Retention (issue 29): kept together for merging.

/// Runs purge steps of `limit` until the pass ends; their reports summed.
async fn purge_pass(
    store: &SharedStorage,
    expired_before: i64,
    limit: usize,
    keep: &[Serial],
) -> crate::PurgeReport {
    let mut total = crate::PurgeReport::default();
    let mut purge = crate::CertificatePurge {
        expired_before,
        limit,
        after: None,
        keep: keep.to_vec(),
    };
    for _ in 0..100 {
        let step = store.purge_expired_certificates(&purge).await.unwrap();
        total.purged += step.purged;
        total.purged_revoked += step.purged_revoked;
        total.links_purged += step.links_purged;
        total.kept += step.kept;
        match step.next {
            Some(next) => purge.after = Some(next),
            None => return total,
        }
    }
    panic!("a purge pass did not end");
}

/// Records of certificates expired before the cut are deleted with their
/// index, revocation and lineage entries, in bounded steps, and counted as
/// purged (so the marks still see everything ever recorded); a record
/// still unexpired or within retention, one the caller keeps, and a
/// renewal whose predecessor is still recorded stay.
pub(crate) async fn retention_purges_old_records_with_everything_that_names_them(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let at = |service: &str, not_after: i64| {
        let mut issued = record(service);
        issued.not_before = not_after - 100;
        issued.issued_at = not_after - 100;
        issued.not_after = not_after;
        issued
    };
    let old = at("billing", 300);
    let revoked = at("billing", 400);
    let within_retention = at("billing", 1500);
    let kept_by_caller = at("billing", 500);
    // A lineage purged oldest first: `first` renewed into `second`.
    let first = at("ledger", 250);
    let mut second = at("ledger", 350);
    second.renewed_from = Some(first.serial.clone());
    // A short-lived renewal of a long-lived certificate waits for it.
    let long_lived = at("ledger", 9000);
    let mut short_renewal = at("ledger", 450);
    short_renewal.renewed_from = Some(long_lived.serial.clone());
    let all = [
        &old,
        &revoked,
        &within_retention,
        &kept_by_caller,
        &first,
        &second,
        &long_lived,
        &short_renewal,
    ];
    for issued in all {
        store.record_issuance(issued, None).await.unwrap();
    }
    for (predecessor, successor) in [(&first, &second), (&long_lived, &short_renewal)] {
        let link = Successor {
            serial: successor.serial.clone(),
            presented: true,
        };
        assert!(
            store
                .swap_successor(&predecessor.serial, None, &link)
                .await
                .unwrap()
        );
    }
    let revocation = crate::Revocation {
        revoked_at: 210,
        reason_code: 1,
    };
    store.revoke(&revoked.serial, revocation).await.unwrap();
    let before = store.marks().await.unwrap();

    // Steps of 2 walk the expiry order to its end.
    let report = purge_pass(
        &store,
        1000,
        2,
        std::slice::from_ref(&kept_by_caller.serial),
    )
    .await;
    assert_eq!(
        (report.purged, report.purged_revoked, report.kept),
        (4, 1, 2),
        "{report:?}"
    );
    assert_eq!(report.links_purged, 1, "first → second had both ends gone");

    drop(store);
    let store = backend.open().await;
    for gone in [&old, &revoked, &first, &second] {
        assert_eq!(store.certificate(&gone.serial).await.unwrap(), None);
        assert!(!store.serial_exists(&gone.serial).await.unwrap());
    }
    for stays in [
        &within_retention,
        &kept_by_caller,
        &long_lived,
        &short_renewal,
    ] {
        assert!(store.certificate(&stays.serial).await.unwrap().is_some());
    }
    let serials = |records: Vec<IssuanceRecord>| -> Vec<Serial> {
        let mut serials: Vec<Serial> = records.into_iter().map(|r| r.serial).collect();
        serials.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        serials
    };
    let mut expected = vec![
        within_retention.serial.clone(),
        kept_by_caller.serial.clone(),
    ];
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let billing = "billing".parse().unwrap();
    assert_eq!(
        serials(store.certificates(Some(&billing)).await.unwrap()),
        expected
    );
    assert_eq!(
        serials(
            store
                .newest_certificates(Some(&billing), 100)
                .await
                .unwrap()
        ),
        expected
    );
    assert_eq!(store.newest_certificates(None, 100).await.unwrap().len(), 4);
    assert_eq!(store.record_count().await.unwrap(), 4);
    assert!(store.revoked_unexpired(0).await.unwrap().is_empty());
    // Nor does the revoked listing's index name the purged revoked record:
    // a revoked page examines nothing.
    let mut revoked_page = crate::CertificateQuery::newest(10, 0);
    revoked_page.state = Some(crate::CertificateState::Revoked);
    let page = crate::listing::page_within(&*store, &revoked_page, 10)
        .await
        .unwrap();
    let examined = page.examined;
    assert_eq!((page.records.len(), examined), (0, 0));
    assert_eq!(store.successor(&first.serial).await.unwrap(), None);
    assert!(store.successor(&long_lived.serial).await.unwrap().is_some());

    // Ever recorded and revoked stay what they were: not a rollback.
    let after = store.marks().await.unwrap();
    assert_eq!(after.purged_records, before.purged_records + 4);
    assert_eq!(after.revocations, before.revocations);
    assert_eq!(after.records, before.records);
    assert_eq!(
        store.record_count().await.unwrap() + after.purged_records,
        all.len() as u64
    );

    // Nothing more to do; a later cut takes what retention kept.
    let again = purge_pass(
        &store,
        1000,
        2,
        std::slice::from_ref(&kept_by_caller.serial),
    )
    .await;
    assert_eq!((again.purged, again.kept), (0, 2), "{again:?}");
    let later = purge_pass(&store, 2000, 100, &[]).await;
    assert_eq!((later.purged, later.kept), (2, 1), "{later:?}");
}

/// Audit entries older than the cut go, oldest first, at most `limit` per
/// step; newer ones stay.
pub(crate) async fn retention_purges_audit_entries_oldest_first_in_bounded_steps(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    for at in [10, 20, 30, 40, 50] {
        let entry = crate::AuditEntry {
            at,
            event: crate::AuditEvent::Issue,
            allowed: true,
            caller: "test".into(),
            attestation: None,
            service: None,
            serial: None,
            reason: None,
            selectors: Vec::new(),
        };
        store.append_audit(&entry).await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(store.purge_audit(35, 2).await.unwrap(), 2);
    assert_eq!(store.purge_audit(35, 2).await.unwrap(), 1);
    assert_eq!(store.purge_audit(35, 2).await.unwrap(), 0);
    let left: Vec<i64> = store
        .audit_since(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.at)
        .collect();
    assert_eq!(left, [40, 50]);
}
