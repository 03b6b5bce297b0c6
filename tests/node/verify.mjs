// Verifies a certd token as a Node service with `jose` does: discovery from
// the issuer, the keys from the discovered jwks_uri (createRemoteJWKSet),
// then jwtVerify with the issuer and audience. A token checked for another
// issuer or audience must be refused.
//
// Usage: node verify.mjs ISSUER TOKEN AUDIENCE
// Prints `ok <payload as JSON>`, or `FAILED <step>: <why>` and exits 1.

import { createRemoteJWKSet, jwtVerify } from 'jose';

const [issuer, token, audience] = process.argv.slice(2);

function fail(step, why) {
  console.log(`FAILED ${step}: ${why}`);
  process.exit(1);
}

let config;
try {
  const answer = await fetch(`${issuer}/.well-known/openid-configuration`);
  config = await answer.json();
} catch (error) {
  fail('discovery', String(error));
}
if (config.issuer !== issuer) {
  fail('discovery', `issuer ${config.issuer}, not ${issuer}`);
}
const keys = createRemoteJWKSet(new URL(config.jwks_uri));
let payload;
try {
  ({ payload } = await jwtVerify(token, keys, {
    issuer,
    audience,
    algorithms: config.id_token_signing_alg_values_supported,
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat'],
  }));
} catch (error) {
  fail('verify', `${error.code}: ${error.message}`);
}
for (const [wrong, claim] of [
  [{ issuer: 'https://elsewhere.example', audience }, 'iss'],
  [{ issuer, audience: `not-${audience}` }, 'aud'],
]) {
  try {
    await jwtVerify(token, keys, wrong);
  } catch (error) {
    if (error.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && error.claim === claim) {
      continue;
    }
    fail('refusal', `${JSON.stringify(wrong)}: ${error.code} ${error.claim}`);
  }
  fail('refusal', `${JSON.stringify(wrong)}: accepted`);
}
console.log(`ok ${JSON.stringify(payload)}`);
