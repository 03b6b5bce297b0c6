// Verifies a token from certd's OAuth 2.0 Token Exchange (RFC 8693) as a
// Node service at the end of a delegation chain would, with `jose`: the
// keys from the jwks_uri of the RFC 8414 metadata (createRemoteJWKSet),
// then jwtVerify with the issuer, the audience, typ at+jwt (RFC 9068) and
// sub, exp, iat, jti and act required. The token must speak for the
// expected user (sub) and name exactly the expected chain of actors when
// its `act` claim is walked from the outermost (current) actor inward
// (RFC 8693 section 4.1). The same token checked for another audience must
// be refused.
//
// Usage: node token_exchange.mjs ISSUER TOKEN AUDIENCE EXPECTED_SUB EXPECTED_ACT_CHAIN_JSON
// (EXPECTED_ACT_CHAIN_JSON: a JSON array of actor SPIFFE IDs, current actor first.)
// Prints `ok {"sub":..., "act":[...], "scope":...}`, or `FAILED <step>: <why>`
// and exits 1.

import { createRemoteJWKSet, jwtVerify } from 'jose';

function fail(step, why) {
  console.log(`FAILED ${step}: ${why}`);
  process.exit(1);
}

// The actors `act` names, outermost (current) first; each act object must
// name its actor in `sub` (any other members are not looked at).
function actors(act) {
  const chain = [];
  for (let actor = act; actor !== undefined; actor = actor.act) {
    if (actor === null || typeof actor !== 'object' || Array.isArray(actor)
        || typeof actor.sub !== 'string') {
      fail('act', `${JSON.stringify(actor)} is not an actor in ${JSON.stringify(act)}`);
    }
    chain.push(actor.sub);
  }
  return chain;
}

const [issuer, token, audience, expectedSub, expectedChainJson] = process.argv.slice(2);
if (expectedChainJson === undefined) {
  fail('arguments', 'token_exchange.mjs ISSUER TOKEN AUDIENCE EXPECTED_SUB EXPECTED_ACT_CHAIN_JSON');
}
let expectedChain;
try {
  expectedChain = JSON.parse(expectedChainJson);
} catch (error) {
  fail('arguments', `EXPECTED_ACT_CHAIN_JSON: ${error}`);
}
if (!Array.isArray(expectedChain) || expectedChain.some((id) => typeof id !== 'string')) {
  fail('arguments', `EXPECTED_ACT_CHAIN_JSON ${expectedChainJson} is not an array of strings`);
}

let config;
try {
  const answer = await fetch(`${issuer}/.well-known/oauth-authorization-server`);
  if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
  config = await answer.json();
} catch (error) {
  fail('discovery', String(error));
}
if (config.issuer !== issuer) {
  fail('discovery', `issuer ${config.issuer}, not ${issuer}`);
}
if (!config.jwks_uri) fail('discovery', `no jwks_uri in ${JSON.stringify(config)}`);

const keys = createRemoteJWKSet(new URL(config.jwks_uri));
const options = {
  issuer,
  audience,
  typ: 'at+jwt',
  algorithms: config.id_token_signing_alg_values_supported,
  requiredClaims: ['sub', 'exp', 'iat', 'jti', 'act'],
};
let payload;
try {
  ({ payload } = await jwtVerify(token, keys, options));
} catch (error) {
  fail('verify', `${error.code}: ${error.message}`);
}
if (payload.sub !== expectedSub) {
  fail('claims', `sub ${payload.sub}, not ${expectedSub}`);
}
const chain = actors(payload.act);
if (JSON.stringify(chain) !== JSON.stringify(expectedChain)) {
  fail('act', `chain ${JSON.stringify(chain)}, not ${JSON.stringify(expectedChain)}`);
}

// Meant for another service: refused for its audience.
try {
  await jwtVerify(token, keys, { ...options, audience: `not-${audience}` });
  fail('refusal', `accepted for audience not-${audience}`);
} catch (error) {
  if (error.code !== 'ERR_JWT_CLAIM_VALIDATION_FAILED' || error.claim !== 'aud') {
    fail('refusal', `not-${audience}: ${error.code} ${error.claim}: ${error.message}`);
  }
}

console.log(`ok ${JSON.stringify({ sub: payload.sub, act: chain, scope: payload.scope })}`);
