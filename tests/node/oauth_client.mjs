// Gets an access token from certd's token endpoint as a Node service
// would: openid-client discovers the issuer and runs the client-credentials
// flow with tls_client_auth (the client's certd certificate on the TLS
// connection, through undici; no secret); jose's jwtVerify then checks the
// token with the issuer and audience against the discovered keys.
//
// Usage: node oauth_client.mjs ISSUER CA_BUNDLE CERT KEY CLIENT_ID AUDIENCE SCOPE
// Prints `ok <claims as JSON>`, or `FAILED <step>: <why>` and exits 1.

import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { createRemoteJWKSet, jwtVerify } from 'jose';

function fail(step, why) {
  console.log(`FAILED ${step}: ${why}`);
  process.exit(1);
}

const [issuer, caFile, certFile, keyFile, clientId, audience, scope] = process.argv.slice(2);
const agent = new Agent({
  connect: {
    ca: readFileSync(caFile),
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
  },
});
const withCertificate = (url, options) => undiciFetch(url, { ...options, dispatcher: agent });

let config;
try {
  config = await client.discovery(
    new URL(issuer),
    clientId,
    { use_mtls_endpoint_aliases: true },
    client.TlsClientAuth(),
    {
      // The issuer is certd's plain-HTTP listener in this test.
      execute: [client.allowInsecureRequests],
      [client.customFetch]: withCertificate,
    },
  );
} catch (error) {
  fail('discovery', error);
}

let tokens;
try {
  tokens = await client.clientCredentialsGrant(config, { scope, audience });
} catch (error) {
  fail('token', `${error} ${JSON.stringify(error.cause ?? {})}`);
}

const metadata = config.serverMetadata();
try {
  const keys = createRemoteJWKSet(new URL(metadata.jwks_uri));
  const { payload } = await jwtVerify(tokens.access_token, keys, { issuer, audience });
  if (payload.scope !== scope) fail('claims', `scope ${payload.scope}, not ${scope}`);
  if (!payload.cnf || !payload.cnf['x5t#S256']) fail('claims', 'not certificate-bound');
  console.log(`ok ${JSON.stringify(payload)}`);
} catch (error) {
  fail('verify', error);
}
