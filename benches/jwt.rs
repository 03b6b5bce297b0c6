//! JWT-SVIDs: minting (derive-once key, ES256 sign) and verification
//! (ES256 verify, claims checks), the work behind `MintJwtSvid` and the
//! agent's `ValidateJWTSVID`.

use std::time::Duration;

use certd::jwt::{self, JwkSet, JwtKeys, KeySchedule};
use criterion::{Criterion, criterion_group, criterion_main};

fn mint_and_verify(c: &mut Criterion) {
    let keys = JwtKeys::from_master(
        zeroize::Zeroizing::new([9; 32]),
        KeySchedule {
            rotation: Duration::from_secs(86_400),
            publish_ahead: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(3600),
        },
    );
    let subject = "spiffe://certd.internal/svc/billing".parse().unwrap();
    let audiences = vec!["spiffe://certd.internal/svc/payments".to_string()];
    let now = certd::ca::unix_seconds(std::time::SystemTime::now());
    c.bench_function("jwt_mint", |b| {
        b.iter(|| jwt::mint(&keys, &subject, &audiences, now, 300).unwrap())
    });
    let token = jwt::mint(&keys, &subject, &audiences, now, 300)
        .unwrap()
        .token;
    let set = JwkSet::published(&keys, now);
    c.bench_function("jwt_verify", |b| {
        b.iter(|| jwt::verify(&token, &audiences[0], &set).unwrap())
    });
}

criterion_group!(benches, mint_and_verify);
criterion_main!(benches);
