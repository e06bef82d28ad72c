// A real OpenID provider (oidc-provider v9) for the gateway's tests. Test-only: never deploy it.
//
// Run from tests/node so `oidc-provider` resolves from tests/node/node_modules:
//
//   PORT=NNNN node -r ../support/loopback.cjs oidc/provider.mjs
//
// The issuer is exactly http://127.0.0.1:PORT (no trailing slash). Environment:
//
//   PORT                      required; the provider listens on 127.0.0.1 only.
//   JWKS_FILE                 a JSON file {"keys": [private JWK, ...]}; a restart with the same file
//                             keeps the same signing keys. Absent: oidc-provider's own keys.
//   RESOURCE_SCOPES           scopes a resource server (any http://127.0.0.1 URL) accepts,
//                             space-separated; default "mcp:tools files:read files:write files:admin".
//   DEFAULT_SCOPE             scope given to authorization requests that carry none; default
//                             "mcp:tools".
//   TOKEN_TTL                 access-token lifetime in seconds; default 300.
//   CC_CLIENT_SECRET          when set, pre-registers the confidential client "test-cc" (grant
//                             client_credentials, client_secret_basic or client_secret_post).
//   REGISTERED_SCOPE_CEILING  "1" (default): a dynamically registered client's `scope` caps what
//                             it may request later, as in stock oidc-provider. "0": `scope` is
//                             dropped from registration requests, so clients can step up.
//   CLAIMS_IN_ID_TOKEN        "0" (default): claims requested by scope (`email`, `groups`) come
//                             only from UserInfo (GET /me) when an access token is issued, as in
//                             stock oidc-provider (`conformIdTokenClaims: true`, OpenID Connect
//                             Core 5.4). "1": they are in the ID token too
//                             (`conformIdTokenClaims: false`), as some providers are configured.
//
// Claims by scope: `openid` -> sub; `email` -> email, email_verified; `groups` -> groups.
// UserInfo answers JSON, or a signed JWT (RS256) to a client registered with
// `userinfo_signed_response_alg`.
//
// Test-only extras:
//   * Headless login and consent: GET /interaction/:uid logs in the user named by the
//     authorization request's `login_hint` (default "alice"; an unknown user gets access_denied)
//     and grants every requested scope and resource, then redirects on.
//   * A non-standard `ttl` form field (seconds, 1-86400) on any token request overrides the
//     access-token lifetime, so a test can mint a token that expires in one second.
//   * Access tokens carry the user's `email` and `groups`.
//   * User `eve` (groups [eng]) is a liar's account: her UserInfo (JSON) answers `sub: "alice"`,
//     so a test can check that a relying party refuses a UserInfo `sub` that is not the ID
//     token's (OpenID Connect Core 5.3.4). Other users' UserInfo is untouched.
//   * GET /test/requests answers {"METHOD /path": count, ...} for every request seen so far, so
//     a test can assert, from the provider's side, that an endpoint was (never) called.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const LOOPBACK = '127.0.0.1';
const PORT = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  throw new Error(`PORT must be a TCP port number, got ${JSON.stringify(process.env.PORT)}`);
}
const ISSUER = `http://${LOOPBACK}:${PORT}`;

function words(value, fallback) {
  return (value ?? fallback).split(/\s+/).filter(Boolean);
}

const RESOURCE_SCOPES = words(process.env.RESOURCE_SCOPES, 'mcp:tools files:read files:write files:admin');
const DEFAULT_SCOPE = words(process.env.DEFAULT_SCOPE, 'mcp:tools').join(' ');
const TOKEN_TTL = Number.parseInt(process.env.TOKEN_TTL ?? '300', 10);
const CC_CLIENT_SECRET = process.env.CC_CLIENT_SECRET || undefined;
const REGISTERED_SCOPE_CEILING = (process.env.REGISTERED_SCOPE_CEILING ?? '1') !== '0';
const CLAIMS_IN_ID_TOKEN = (process.env.CLAIMS_IN_ID_TOKEN ?? '0') === '1';
const MAX_TTL_HINT = 86400;

const USERS = {
  alice: { email: 'alice@example.test', groups: ['eng'] },
  bob: { email: 'bob@example.test', groups: ['sales'] },
  eve: { email: 'eve@example.test', groups: ['eng'], userinfoSub: 'alice' },
};
const DEFAULT_USER = 'alice';

function isLoopbackResource(indicator) {
  try {
    const url = new URL(indicator);
    return url.protocol === 'http:' && url.hostname === LOOPBACK;
  } catch {
    return false;
  }
}

// The non-standard `ttl` token-request field (see the header).
function ttlHint(ctx) {
  const raw = ctx?.oidc?.body?.ttl;
  if (raw === undefined) return undefined;
  const ttl = Number(raw);
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_HINT) {
    throw new errors.InvalidRequest(`ttl must be an integer from 1 to ${MAX_TTL_HINT}`);
  }
  return ttl;
}

function accessTokenTTL(ctx, token) {
  return ttlHint(ctx) ?? token.resourceServer?.accessTokenTTL ?? TOKEN_TTL;
}

const clients = [];
if (CC_CLIENT_SECRET) {
  clients.push({
    client_id: 'test-cc',
    client_secret: CC_CLIENT_SECRET,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  });
}

const configuration = {
  clients,
  jwks: process.env.JWKS_FILE ? JSON.parse(readFileSync(process.env.JWKS_FILE, 'utf8')) : undefined,
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  conformIdTokenClaims: !CLAIMS_IN_ID_TOKEN,
  responseTypes: ['code'],
  pkce: { required: () => true },
  async findAccount(_ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: user.email, email_verified: true, groups: user.groups };
      },
    };
  },
  async extraTokenClaims(_ctx, token) {
    const user = token.accountId ? USERS[token.accountId] : undefined;
    return user ? { email: user.email, groups: user.groups } : undefined;
  },
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    jwtUserinfo: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(_ctx, _client, oneOf) {
        // A token request without `resource` gets the one the grant was made for.
        return oneOf;
      },
      useGrantedResource: () => true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (!isLoopbackResource(resourceIndicator)) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: RESOURCE_SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: TOKEN_TTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: (ctx, token) => accessTokenTTL(ctx, token),
    ClientCredentials: (ctx, token) => accessTokenTTL(ctx, token),
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Interaction: 600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
};

const provider = new Provider(ISSUER, configuration);

// The request log behind GET /test/requests (see the header).
const seen = new Map();
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/test/requests') {
    ctx.body = Object.fromEntries(seen);
    return;
  }
  const key = `${ctx.method} ${ctx.path}`;
  seen.set(key, (seen.get(key) ?? 0) + 1);
  await next();
});

// Eve's UserInfo answers another user's `sub` (see the header). oidc-provider always sets `sub`
// to the account id, so the answer is rewritten on its way out.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'GET' || ctx.path !== '/me' || ctx.status !== 200) return;
  const lie = USERS[ctx.oidc?.account?.accountId]?.userinfoSub;
  if (lie && ctx.body !== null && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body)) {
    ctx.body = { ...ctx.body, sub: lie };
  }
});

// Authorization requests without `scope` get DEFAULT_SCOPE.
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/auth' && ctx.query.scope === undefined) {
    ctx.query = { ...ctx.query, scope: DEFAULT_SCOPE };
  }
  await next();
});

// REGISTERED_SCOPE_CEILING=0: drop `scope` from registration requests. oidc-provider uses a body
// parsed upstream when the request stream has been consumed.
if (!REGISTERED_SCOPE_CEILING) {
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/reg' && ctx.is('application/json')) {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        body = undefined;
      }
      if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
        delete body.scope;
      }
      ctx.request.body = body;
    }
    await next();
  });
}

// Headless login and consent: every interaction completes at once and redirects on.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'GET' || !/^\/interaction\/[^/]+$/.test(ctx.path)) {
    await next();
    return;
  }
  const { prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (prompt.name === 'login') {
    const accountId = params.login_hint ?? DEFAULT_USER;
    result = USERS[accountId]
      ? { login: { accountId } }
      : { error: 'access_denied', error_description: 'unknown test user' };
  } else if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { details } = prompt;
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
});

const server = provider.listen(PORT, LOOPBACK, () => {
  console.log(`oidc-provider listening, issuer ${ISSUER}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
