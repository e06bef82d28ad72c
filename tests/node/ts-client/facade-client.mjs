// The TypeScript MCP client (`@modelcontextprotocol/client` 2.x) against a gateway in facade mode.
//
// Starting from nothing but the MCP URL, the SDK's own OAuth code discovers the protected
// resource metadata and the authorization server's metadata, registers dynamically and hands us
// an authorization URL. This script then plays the browser headlessly: it GETs that URL with
// redirects off, fills in the gateway's sign-in form (user name and password) and consent form
// (approve), and follows each Location until it points at our loopback redirect URI (which is
// never requested). The callback's query goes to `transport.finishAuth(searchParams)`, where the
// SDK checks `iss` (RFC 9207) before it redeems the code. Then a fresh connection lists tools and
// calls one.
//
// Usage: node facade-client.mjs <mcp-url> <redirect-uri> [--tamper-iss]
// Environment: TS_CLIENT_USERNAME, TS_CLIENT_PASSWORD (the user typed into the sign-in page),
//              TS_CLIENT_TOOL (default "echo"), TS_CLIENT_TEXT (default "hello").
// Output: exactly one JSON line on stdout. With --tamper-iss, "x" is appended to the callback's
// `iss` before finishAuth and the line reports the error the SDK refused with. Exit status 0
// when the script ran to its end (whatever the outcome), 1 on an unexpected failure.

import { randomBytes } from 'node:crypto';

import {
    Client,
    IssuerMismatchError,
    StreamableHTTPClientTransport,
    UnauthorizedError
} from '@modelcontextprotocol/client';

const MAX_STEPS = 10;

class InMemoryOAuthProvider {
    constructor(redirectUri) {
        this._redirectUri = redirectUri;
        this._state = randomBytes(16).toString('base64url');
        this.authorizationUrls = [];
    }

    get redirectUrl() {
        return this._redirectUri;
    }

    get clientMetadata() {
        return {
            client_name: 'mcp-auth-gateway tests (TypeScript client)',
            redirect_uris: [this._redirectUri],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'none'
        };
    }

    state() {
        return this._state;
    }

    clientInformation() {
        return this._clientInformation;
    }

    saveClientInformation(info) {
        this._clientInformation = info;
    }

    tokens() {
        return this._tokens;
    }

    saveTokens(tokens) {
        this._tokens = tokens;
    }

    redirectToAuthorization(url) {
        this.authorizationUrls.push(String(url));
    }

    saveCodeVerifier(verifier) {
        this._codeVerifier = verifier;
    }

    codeVerifier() {
        if (this._codeVerifier === undefined) throw new Error('no code verifier saved');
        return this._codeVerifier;
    }

    saveDiscoveryState(state) {
        this._discoveryState = state;
    }

    discoveryState() {
        return this._discoveryState;
    }
}

// -- the browser leg -------------------------------------------------------------------------

function unescapeHtml(text) {
    return text
        .replace(/&#x([0-9a-f]+);/gi, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
        .replace(/&#(\d+);/g, (_, dec) => String.fromCodePoint(parseInt(dec, 10)))
        .replace(/&quot;/g, '"')
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&amp;/g, '&');
}

/** The form on one of the gateway's pages, filled in: [action, URLSearchParams] or undefined. */
function fillForm(page, username, password) {
    const form = /<form method="post" action="([^"]+)">(.*?)<\/form>/s.exec(page);
    if (!form) return undefined;
    const [, action, inner] = form;
    const fields = new URLSearchParams();
    for (const [, name, value] of inner.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
        fields.set(unescapeHtml(name), unescapeHtml(value));
    }
    if (inner.includes('name="password"')) {
        fields.set('username', username);
        fields.set('password', password);
    }
    if (inner.includes('name="decision"')) fields.set('decision', 'approve');
    return [unescapeHtml(action), fields];
}

function isLoopbackHttp(url) {
    return url.protocol === 'http:' && url.hostname === '127.0.0.1';
}

function sameEndpoint(a, b) {
    return a.origin === b.origin && a.pathname === b.pathname;
}

/** Keep the cookies a response sets (all hosts here are 127.0.0.1), as a browser would: the
 * gateway binds each step of an authorization to its flow cookie. */
function keepCookies(response, jar) {
    for (const line of response.headers.getSetCookie()) {
        const [pair, ...attributes] = line.split(';');
        const [name, value] = [pair.slice(0, pair.indexOf('=')).trim(), pair.slice(pair.indexOf('=') + 1).trim()];
        const expired = attributes.some(a => /^\s*max-age\s*=\s*0\s*$/i.test(a));
        if (expired || value === '') jar.delete(name);
        else jar.set(name, value);
    }
}

/** GET the authorization URL and follow it to the redirect URI; returns the callback URL. */
async function followAuthorization(authorizationUrl, redirectUri, username, password, visited) {
    const target = new URL(redirectUri);
    let url = new URL(authorizationUrl);
    let body;
    let formOrigin;
    const jar = new Map();
    for (let step = 0; step < MAX_STEPS; step++) {
        if (!isLoopbackHttp(url)) throw new Error(`refusing to leave loopback: ${url.origin}`);
        const method = body === undefined ? 'GET' : 'POST';
        // Like a browser, a form POST carries the Origin of the page that held the form.
        const headers = body === undefined ? {} : { Origin: formOrigin };
        if (jar.size) headers.Cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
        const response = await fetch(url, { method, body, headers, redirect: 'manual' });
        keepCookies(response, jar);
        visited.push({ method, url: `${url.origin}${url.pathname}`, status: response.status });
        const location = response.headers.get('location');
        if (response.status >= 300 && response.status < 400 && location) {
            url = new URL(location, url);
            body = undefined;
            if (sameEndpoint(url, target)) return url;
            continue;
        }
        const page = await response.text();
        const answer = response.status === 200 ? fillForm(page, username, password) : undefined;
        if (answer === undefined) {
            throw new Error(`${method} ${url.pathname} answered ${response.status}, not a redirect or a form`);
        }
        formOrigin = url.origin;
        url = new URL(answer[0], url);
        body = answer[1];
    }
    throw new Error(`more than ${MAX_STEPS} steps from the authorization URL`);
}

// -- the MCP client ----------------------------------------------------------------------------

function recordingFetch(requests) {
    return async (input, init) => {
        const response = await fetch(input, init);
        const url = new URL(input instanceof Request ? input.url : String(input));
        requests.push({
            method: init?.method ?? (input instanceof Request ? input.method : 'GET'),
            url: `${url.origin}${url.pathname}`,
            status: response.status
        });
        return response;
    };
}

function newClient() {
    return new Client({ name: 'mcp-auth-gateway-ts-test', version: '1.0.0' });
}

async function main() {
    const [mcpUrl, redirectUri, ...flags] = process.argv.slice(2);
    if (!mcpUrl || !redirectUri) throw new Error('usage: facade-client.mjs <mcp-url> <redirect-uri> [--tamper-iss]');
    const tamper = flags.includes('--tamper-iss');
    const username = process.env.TS_CLIENT_USERNAME ?? '';
    const password = process.env.TS_CLIENT_PASSWORD ?? '';
    const tool = process.env.TS_CLIENT_TOOL ?? 'echo';
    const text = process.env.TS_CLIENT_TEXT ?? 'hello';

    const provider = new InMemoryOAuthProvider(redirectUri);
    const requests = [];
    const browser = [];
    const transportOptions = { authProvider: provider, fetch: recordingFetch(requests) };

    // 1. Connect with no token: 401, discovery, registration, then the SDK "redirects" the user.
    const first = new StreamableHTTPClientTransport(new URL(mcpUrl), transportOptions);
    let firstError;
    try {
        await newClient().connect(first);
    } catch (error) {
        firstError = error;
    }
    if (!(firstError instanceof UnauthorizedError)) {
        throw new Error(`expected UnauthorizedError from the first connect, got ${firstError}`);
    }
    if (provider.authorizationUrls.length !== 1) {
        throw new Error(`expected one authorization URL, got ${provider.authorizationUrls.length}`);
    }

    // 2. The browser leg: sign in, approve, come back with code, state, iss.
    const callback = await followAuthorization(provider.authorizationUrls[0], redirectUri, username, password, browser);
    const params = callback.searchParams;
    if (params.get('state') !== provider.state()) throw new Error('state mismatch in the callback');
    const issuerSeen = provider.discoveryState()?.authorizationServerMetadata?.issuer;
    const result = {
        issuer: issuerSeen,
        iss_parameter_supported:
            provider.discoveryState()?.authorizationServerMetadata?.authorization_response_iss_parameter_supported ?? null,
        callback_iss: params.get('iss'),
        authorization_url: provider.authorizationUrls[0].split('?')[0],
        client_id: provider.clientInformation()?.client_id ?? null,
        requests,
        browser
    };
    if (tamper) params.set('iss', `${params.get('iss') ?? ''}x`);

    // 3. finishAuth: RFC 9207 check of iss, then the code exchange.
    try {
        await first.finishAuth(params);
    } catch (error) {
        result.refused = {
            name: error?.constructor?.name ?? typeof error,
            issuer_mismatch: error instanceof IssuerMismatchError,
            kind: error?.kind ?? null,
            expected: error?.expected ?? null,
            received: error?.received ?? null,
            message: String(error?.message ?? error)
        };
        result.token_saved = provider.tokens() !== undefined;
        return result;
    }
    await first.close();

    // 4. A fresh connection with the token: list tools and call one.
    const client = newClient();
    const second = new StreamableHTTPClientTransport(new URL(mcpUrl), transportOptions);
    await client.connect(second);
    const tools = await client.listTools();
    const call = await client.callTool({ name: tool, arguments: { text } });
    await client.close();
    const tokens = provider.tokens();
    return {
        ...result,
        tools: tools.tools.map(t => t.name),
        call: {
            is_error: call.isError ?? false,
            text: call.content.filter(c => c.type === 'text').map(c => c.text).join('')
        },
        scope: tokens?.scope ?? null,
        access_token: tokens?.access_token ?? null,
        refresh_token: tokens?.refresh_token ?? null
    };
}

try {
    process.stdout.write(`${JSON.stringify(await main())}\n`);
} catch (error) {
    process.stderr.write(`${error?.stack ?? error}\n`);
    process.exitCode = 1;
}
