//! JWT-SVIDs: minting (derive-once key, sign) and verification (signature,
//! claims checks) for each signing algorithm, the work behind
//! `MintJwtSvid` and the agent's `ValidateJWTSVID`.

use std::time::Duration;

use certd::jwt::{self, JwkSet, JwtAlgorithm, JwtKeys, KeySchedule};
use criterion::{Criterion, criterion_group, criterion_main};

fn mint_and_verify(c: &mut Criterion) {
    let subject = "spiffe://certd.internal/svc/billing".parse().unwrap();
    let audiences = vec!["spiffe://certd.internal/svc/payments".to_string()];
    let now = certd::clock::unix_seconds(std::time::SystemTime::now());
    let mut mint = c.benchmark_group("jwt_mint");
    let mut tokens = Vec::new();
    for algorithm in JwtAlgorithm::ALL {
        let keys = JwtKeys::from_master(
            zeroize::Zeroizing::new([9; 32]),
            KeySchedule {
                rotation: Duration::from_secs(86_400),
                publish_ahead: Duration::from_secs(3600),
                max_ttl: Duration::from_secs(3600),
            },
            algorithm,
        );
        let sign = || {
            jwt::mint(
                &keys,
                Some("https://certd.example"),
                &subject,
                &audiences,
                now,
                300,
            )
            .unwrap()
        };
        mint.bench_function(algorithm.name(), |b| b.iter(sign));
        let token = sign().token;
        tokens.push((algorithm, token, JwkSet::published(&keys, now)));
    }
    mint.finish();
    let mut verify = c.benchmark_group("jwt_verify");
    for (algorithm, token, set) in &tokens {
        verify.bench_function(algorithm.name(), |b| {
            b.iter(|| jwt::verify(token, &audiences[0], set).unwrap())
        });
    }
    verify.finish();
}

criterion_group!(benches, mint_and_verify);
criterion_main!(benches);
