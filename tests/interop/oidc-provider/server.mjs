// A real OpenID Connect provider for mcp-oauthd's interop tests: panva's certified
// `oidc-provider`, configured the way an operator would configure it for a confidential
// relying party (mcp-oauthd), on loopback over plain http.
//
//   node server.mjs [PORT]        PORT from argv, else $PORT, else 0 (the OS picks one)
//
// Environment:
//   CLIENT_ID, CLIENT_SECRET   mcp-oauthd's credentials at this provider (required)
//   REDIRECT_URIS              mcp-oauthd's callback URL(s), space-separated (required)
//   ACCESS_TOKEN_TTL           upstream access-token lifetime in seconds (default 60)
//
// Stdout carries one `READY <issuer>` line once listening, then one `EVENT <json>` line per
// provider event the tests look at (never a token, code or secret). Stderr carries the
// provider's own warnings and server errors.
//
// The login and consent pages are oidc-provider's built-in devInteractions: its own HTML
// forms, which the tests submit like a browser would. They accept any login name (the
// password is not checked); `findAccount` knows one account, so only "alice" gets through.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`server.mjs: ${name} must be set`);
    process.exit(2);
  }
  return value;
}

const clientId = required('CLIENT_ID');
const clientSecret = required('CLIENT_SECRET');
const redirectUris = required('REDIRECT_URIS').split(/\s+/).filter(Boolean);
const accessTokenTtl = Number.parseInt(process.env.ACCESS_TOKEN_TTL ?? '60', 10);
const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '0', 10);

const ACCOUNTS = new Map([
  [
    'alice',
    {
      email: 'alice@example.com',
      email_verified: true,
      name: 'Alice Liddell',
      preferred_username: 'alice',
    },
  ],
]);

function emit(event, fields = {}) {
  process.stdout.write(`EVENT ${JSON.stringify({ event, ...fields })}\n`);
}

// A fresh signing key per run: the tests never need to know it, only the JWKS does.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'interop-rs256', alg: 'RS256', use: 'sig' };

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: redirectUris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    // PKCE for every client, confidential ones included (OAuth 2.1 §7.5.1); only S256.
    pkce: { methods: ['S256'], required: () => true },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
    },
    // A refresh token only for an offline_access grant of a client allowed to refresh;
    // oidc-provider itself drops offline_access unless the request has prompt=consent
    // (OIDC Core §11).
    async issueRefreshToken(ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    async findAccount(ctx, id) {
      const account = ACCOUNTS.get(id);
      if (account === undefined) {
        return undefined;
      }
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...account };
        },
      };
    },
  });

  provider.on('grant.success', (ctx) => {
    emit('grant.success', { grant_type: ctx.oidc.params.grant_type });
  });
  provider.on('grant.error', (ctx, error) => {
    emit('grant.error', { grant_type: ctx.oidc.params?.grant_type, error: error.error });
  });
  provider.on('grant.revoked', () => emit('grant.revoked'));
  provider.on('revocation.error', (ctx, error) => emit('revocation.error', { error: error.error }));
  provider.on('authorization.error', (ctx, error) => {
    emit('authorization.error', { error: error.error, description: error.error_description });
  });
  provider.on('server_error', (ctx, error) => console.error('server_error', error));

  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
