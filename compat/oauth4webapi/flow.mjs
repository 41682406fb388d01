// Runs the OAuth2 flows of keyledger through oauth4webapi, a strict client library, with no
// special-casing: discovery (RFC 8414), password grant with the public client "dashboard",
// refresh_token rotation, client_credentials (client_secret_basic and client_secret_post),
// RFC 9068 access token validation against the JWKS, introspection (RFC 7662) and revocation
// (RFC 7009).
//
//   node flow.mjs [issuer]          (or KEYLEDGER_ISSUER=... node flow.mjs; default http://127.0.0.1:8000)
//
// Prints one line per step that passes; on the first failure prints the library's error (name,
// code, message, cause) and the last HTTP exchange, then exits 1.

import { randomUUID } from 'node:crypto'
import * as oauth from 'oauth4webapi'

const issuerArg = process.argv[2] ?? process.env.KEYLEDGER_ISSUER ?? 'http://127.0.0.1:8000'
const issuer = new URL(issuerArg.replace(/\/+$/, ''))
const ISSUER = issuer.href.replace(/\/$/, '')
const AUDIENCE = `${ISSUER}/v1`
const TIMEOUT_MS = 10_000

// ---------------------------------------------------------------------------------------------
// Transport: plain HTTP is allowed for a development issuer (oauth4webapi's documented
// `allowInsecureRequests` option). Every exchange is recorded so that a failure can show it.

let lastExchange = null

function redactHeaders(headers) {
  const out = {}
  for (const [name, value] of new Headers(headers ?? {}).entries()) {
    out[name] = name === 'authorization' ? value.replace(/^(\S+)\s+(.{6}).*$/, '$1 $2...') : value
  }
  return out
}

async function recordingFetch(url, init = {}) {
  const request = {
    method: init.method ?? 'GET',
    url: String(url),
    headers: redactHeaders(init.headers),
    body: init.body === undefined ? undefined : String(init.body).replace(/((?:password|client_secret|token|refresh_token)=)([^&]{6})[^&]*/g, '$1$2...'),
  }
  lastExchange = { request, response: null }
  const response = await fetch(url, { ...init, signal: init.signal ?? AbortSignal.timeout(TIMEOUT_MS) })
  const text = await response.clone().text()
  lastExchange.response = {
    status: response.status,
    headers: Object.fromEntries(response.headers.entries()),
    body: text.length > 2000 ? `${text.slice(0, 2000)}...` : text,
  }
  return response
}

const http = {
  [oauth.allowInsecureRequests]: issuer.protocol === 'http:',
  [oauth.customFetch]: recordingFetch,
}

// ---------------------------------------------------------------------------------------------
// Reporting

let stepNo = 0

function fail(step, message, details) {
  console.error(`FAIL [${step}] ${message}`)
  if (details !== undefined) console.error(JSON.stringify(details, null, 2))
  if (lastExchange) {
    console.error('last HTTP exchange:')
    console.error(JSON.stringify(lastExchange, null, 2))
  }
  process.exit(1)
}

function describeError(err) {
  const out = { name: err?.name, code: err?.code, message: err?.message }
  if (err instanceof oauth.ResponseBodyError) {
    Object.assign(out, { status: err.status, error: err.error, error_description: err.error_description })
  }
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    Object.assign(out, { status: err.status, challenges: err.cause })
  } else if (err?.cause !== undefined) {
    try {
      out.cause = JSON.parse(JSON.stringify(err.cause, (k, v) => (v instanceof Headers ? Object.fromEntries(v.entries()) : v)))
    } catch {
      out.cause = String(err.cause)
    }
  }
  return out
}

async function step(name, fn) {
  stepNo += 1
  const label = `${String(stepNo).padStart(2, '0')} ${name}`
  let detail
  try {
    detail = await fn()
  } catch (err) {
    if (err instanceof CheckError) fail(label, err.message, err.details)
    fail(label, 'the library (or the script) threw', describeError(err))
  }
  console.log(`ok ${label}${detail ? `: ${detail}` : ''}`)
}

class CheckError extends Error {
  constructor(message, details) {
    super(message)
    this.details = details
  }
}

function check(condition, message, details) {
  if (!condition) throw new CheckError(message, details)
}

async function expectRejection(promise, predicate, what) {
  try {
    await promise
  } catch (err) {
    check(predicate(err), `expected ${what}, got another error`, describeError(err))
    return err
  }
  throw new CheckError(`expected ${what}, but the library accepted the response`)
}

function decodeJwtParts(jwt) {
  const [h, p] = jwt.split('.')
  const dec = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'))
  return { header: dec(h), payload: dec(p) }
}

function bearerRequest(token) {
  return new Request(`${AUDIENCE}/me`, { headers: { authorization: `Bearer ${token}` } })
}

// ---------------------------------------------------------------------------------------------
// The flows

const dashboard = { client_id: 'dashboard' }
const email = `compat-${randomUUID()}@example.com`
const password = `compat ${randomUUID()} horse`

let as
let project
let projectClient
let projectSecret
let login
let rotated
let basicToken
let postToken

console.log(`oauth4webapi against ${ISSUER} (audience ${AUDIENCE})`)

await step('discovery (RFC 8414) via discoveryRequest + processDiscoveryResponse', async () => {
  const response = await oauth.discoveryRequest(issuer, { ...http, algorithm: 'oauth2' })
  as = await oauth.processDiscoveryResponse(issuer, response)
  for (const field of ['token_endpoint', 'jwks_uri', 'revocation_endpoint', 'introspection_endpoint']) {
    check(typeof as[field] === 'string', `metadata has no ${field}`, as)
  }
  for (const grant of ['password', 'refresh_token', 'client_credentials']) {
    check(as.grant_types_supported?.includes(grant), `grant_types_supported lacks ${grant}`, as)
  }
  return `issuer ${as.issuer}, token_endpoint ${as.token_endpoint}`
})

await step('signup (POST /v1/signup, plain fetch) creates a user, a project and its client', async () => {
  const response = await recordingFetch(`${ISSUER}/v1/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ email, password, project_name: 'oauth4webapi compat' }),
  })
  check(response.status === 201, `signup answered ${response.status}, expected 201`)
  const body = await response.json()
  project = body.project
  projectClient = { client_id: body.client.client_id }
  projectSecret = body.client.client_secret
  check(project?.id && projectClient.client_id && projectSecret, 'signup response lacks project.id, client.client_id or client.client_secret')
  return `project ${project.id}, client ${projectClient.client_id}`
})

await step('password grant, public client "dashboard" (genericTokenEndpointRequest + processGenericTokenEndpointResponse, None auth)', async () => {
  const response = await oauth.genericTokenEndpointRequest(as, dashboard, oauth.None(), 'password', { username: email, password }, http)
  login = await oauth.processGenericTokenEndpointResponse(as, dashboard, response)
  check(login.token_type === 'bearer', `token_type is ${login.token_type}`, login)
  check(typeof login.refresh_token === 'string', 'no refresh_token in the password grant response')
  check(lastExchange.response.headers['cache-control']?.includes('no-store'), 'token response lacks Cache-Control: no-store', lastExchange.response.headers)
  return `token_type ${login.token_type}, expires_in ${login.expires_in}, scope ${JSON.stringify(login.scope ?? null)}`
})

await step('dashboard access token validates as an RFC 9068 JWT (validateJwtAccessToken, JWKS)', async () => {
  const claims = await oauth.validateJwtAccessToken(as, bearerRequest(login.access_token), AUDIENCE, http)
  const { header } = decodeJwtParts(login.access_token)
  check(claims.client_id === 'dashboard', `client_id claim is ${claims.client_id}`, claims)
  return `typ ${header.typ}, alg ${header.alg}, kid ${header.kid}, sub ${claims.sub}`
})

await step('GET /v1/me with the dashboard access token answers 200 for the signed-up user', async () => {
  const response = await recordingFetch(`${AUDIENCE}/me`, { headers: { authorization: `Bearer ${login.access_token}` } })
  check(response.status === 200, `/v1/me answered ${response.status}`)
  const me = await response.json()
  check(me.email === email, `/v1/me answered email ${me.email}`)
  check(me.memberships?.some((m) => m.project_id === project.id && m.role === 'owner'), 'the user is not owner of the signed-up project', me)
  return `${me.email}, owner of ${project.id}`
})

await step('refresh_token grant rotates the pair (refreshTokenGrantRequest + processRefreshTokenResponse, None auth)', async () => {
  const response = await oauth.refreshTokenGrantRequest(as, dashboard, oauth.None(), login.refresh_token, http)
  rotated = await oauth.processRefreshTokenResponse(as, dashboard, response)
  check(rotated.token_type === 'bearer', `token_type is ${rotated.token_type}`, rotated)
  check(typeof rotated.refresh_token === 'string' && rotated.refresh_token !== login.refresh_token, 'the refresh token was not rotated')
  check(rotated.access_token !== login.access_token, 'the access token did not change')
  await oauth.validateJwtAccessToken(as, bearerRequest(rotated.access_token), AUDIENCE, http)
  return 'new access and refresh token; new access token validates'
})

await step('reusing the used refresh token is refused: ResponseBodyError invalid_grant', async () => {
  const response = await oauth.refreshTokenGrantRequest(as, dashboard, oauth.None(), login.refresh_token, http)
  const err = await expectRejection(
    oauth.processRefreshTokenResponse(as, dashboard, response),
    (e) => e instanceof oauth.ResponseBodyError && e.error === 'invalid_grant',
    'ResponseBodyError invalid_grant',
  )
  return `status ${err.status}, error ${err.error}`
})

await step('reuse detection revoked the login family: /v1/me with the rotated token answers 401', async () => {
  const response = await recordingFetch(`${AUDIENCE}/me`, { headers: { authorization: `Bearer ${rotated.access_token}` } })
  check(response.status === 401, `/v1/me answered ${response.status}`)
  return `401, WWW-Authenticate: ${response.headers.get('www-authenticate')}`
})

await step('password grant again, for the revocation checks', async () => {
  const response = await oauth.genericTokenEndpointRequest(as, dashboard, oauth.None(), 'password', { username: email, password }, http)
  login = await oauth.processGenericTokenEndpointResponse(as, dashboard, response)
  const response2 = await oauth.refreshTokenGrantRequest(as, dashboard, oauth.None(), login.refresh_token, http)
  rotated = await oauth.processRefreshTokenResponse(as, dashboard, response2)
  return 'logged in and refreshed once'
})

await step('client_credentials with client_secret_basic (clientCredentialsGrantRequest + processClientCredentialsResponse)', async () => {
  const response = await oauth.clientCredentialsGrantRequest(as, projectClient, oauth.ClientSecretBasic(projectSecret), {}, http)
  check(lastExchange.request.headers.authorization?.startsWith('Basic '), 'the library did not send HTTP Basic authentication', lastExchange.request)
  basicToken = await oauth.processClientCredentialsResponse(as, projectClient, response)
  check(basicToken.token_type === 'bearer', `token_type is ${basicToken.token_type}`, basicToken)
  check(basicToken.refresh_token === undefined, 'client_credentials answered a refresh token (RFC 6749 4.4.3 says SHOULD NOT)')
  const claims = await oauth.validateJwtAccessToken(as, bearerRequest(basicToken.access_token), AUDIENCE, http)
  check(claims.client_id === projectClient.client_id, `client_id claim is ${claims.client_id}`, claims)
  check(claims.project_id === project.id, `project_id claim is ${claims.project_id}`, claims)
  return `expires_in ${basicToken.expires_in}; JWT validates, client_id and project_id claims match`
})

await step('client_credentials with client_secret_post', async () => {
  const response = await oauth.clientCredentialsGrantRequest(as, projectClient, oauth.ClientSecretPost(projectSecret), {}, http)
  check(lastExchange.request.headers.authorization === undefined && lastExchange.request.body.includes('client_secret='), 'the library did not send client_secret in the body', lastExchange.request)
  postToken = await oauth.processClientCredentialsResponse(as, projectClient, response)
  await oauth.validateJwtAccessToken(as, bearerRequest(postToken.access_token), AUDIENCE, http)
  return 'JWT validates'
})

await step('the client_credentials token reads its project (GET /v1/projects/{id} answers 200)', async () => {
  const response = await recordingFetch(`${AUDIENCE}/projects/${project.id}`, { headers: { authorization: `Bearer ${basicToken.access_token}` } })
  check(response.status === 200, `answered ${response.status}`)
  return '200'
})

await step('a wrong client secret (basic) is refused: 401 Basic challenge, body invalid_client (RFC 6749 5.2)', async () => {
  const response = await oauth.clientCredentialsGrantRequest(as, projectClient, oauth.ClientSecretBasic(`${projectSecret}x`), {}, http)
  // oauth4webapi reports a 401 carrying WWW-Authenticate as WWWAuthenticateChallengeError before it
  // reads the body; the unread response is on the error.
  const err = await expectRejection(
    oauth.processClientCredentialsResponse(as, projectClient, response),
    (e) => e instanceof oauth.WWWAuthenticateChallengeError && e.status === 401 && e.cause.some((c) => c.scheme === 'basic'),
    'WWWAuthenticateChallengeError with a Basic challenge',
  )
  const body = await err.response.json()
  check(body.error === 'invalid_client', `the error body says ${body.error}`, body)
  return `${err.name}, status ${err.status}, challenge ${err.cause[0].scheme}, error ${body.error}`
})

await step('a wrong client secret (post) is refused: 401 Basic challenge (RFC 9110 15.5.2), body invalid_client', async () => {
  const response = await oauth.clientCredentialsGrantRequest(as, projectClient, oauth.ClientSecretPost(`${projectSecret}x`), {}, http)
  // Every 401 carries a challenge, whichever way the client authenticated: oauth4webapi reports it as
  // WWWAuthenticateChallengeError, the unread response on the error.
  const err = await expectRejection(
    oauth.processClientCredentialsResponse(as, projectClient, response),
    (e) => e instanceof oauth.WWWAuthenticateChallengeError && e.status === 401 && e.cause.some((c) => c.scheme === 'basic'),
    'WWWAuthenticateChallengeError with a Basic challenge',
  )
  const body = await err.response.json()
  check(body.error === 'invalid_client', `the error body says ${body.error}`, body)
  return `${err.name}, status ${err.status}, challenge ${err.cause[0].scheme}, error ${body.error}`
})

async function introspect(token, auth = oauth.ClientSecretBasic(projectSecret)) {
  const response = await oauth.introspectionRequest(as, projectClient, auth, token, http)
  return oauth.processIntrospectionResponse(as, projectClient, response)
}

await step('introspection of the client_credentials token (introspectionRequest + processIntrospectionResponse, basic)', async () => {
  const info = await introspect(basicToken.access_token)
  check(info.active === true, 'introspection says inactive', info)
  check(info.client_id === projectClient.client_id, `introspection client_id is ${info.client_id}`, info)
  return `active, client_id ${info.client_id}, token_type ${info.token_type ?? '-'}, exp ${info.exp}`
})

await step('introspection of the dashboard access token of a project member (client_secret_post)', async () => {
  const info = await introspect(rotated.access_token, oauth.ClientSecretPost(projectSecret))
  check(info.active === true, 'introspection says inactive', info)
  check(info.client_id === 'dashboard', `introspection client_id is ${info.client_id}`, info)
  return `active, client_id ${info.client_id}, sub ${info.sub}`
})

await step('revoke the dashboard access token (revocationRequest + processRevocationResponse, dashboard, None auth)', async () => {
  const response = await oauth.revocationRequest(as, dashboard, oauth.None(), rotated.access_token, { ...http, additionalParameters: { token_type_hint: 'access_token' } })
  await oauth.processRevocationResponse(response)
  return `HTTP ${lastExchange.response.status}`
})

await step('after revocation, introspection of the dashboard token says active=false', async () => {
  const info = await introspect(rotated.access_token)
  check(info.active === false, 'introspection still says active', info)
  check(Object.keys(info).length === 1, 'an inactive token answer carries more than "active"', info)
  return JSON.stringify(info)
})

await step('after revocation, GET /v1/me with the revoked dashboard token answers 401', async () => {
  const response = await recordingFetch(`${AUDIENCE}/me`, { headers: { authorization: `Bearer ${rotated.access_token}` } })
  check(response.status === 401, `/v1/me answered ${response.status}`)
  return `401, WWW-Authenticate: ${response.headers.get('www-authenticate')}`
})

await step('revoke the dashboard refresh token; refreshing with it is then refused (invalid_grant)', async () => {
  const response = await oauth.revocationRequest(as, dashboard, oauth.None(), rotated.refresh_token, { ...http, additionalParameters: { token_type_hint: 'refresh_token' } })
  await oauth.processRevocationResponse(response)
  const response2 = await oauth.refreshTokenGrantRequest(as, dashboard, oauth.None(), rotated.refresh_token, http)
  const err = await expectRejection(
    oauth.processRefreshTokenResponse(as, dashboard, response2),
    (e) => e instanceof oauth.ResponseBodyError && e.error === 'invalid_grant',
    'ResponseBodyError invalid_grant',
  )
  return `status ${err.status}, error ${err.error}`
})

await step('the project client revokes its client_credentials token (client_secret_basic)', async () => {
  const response = await oauth.revocationRequest(as, projectClient, oauth.ClientSecretBasic(projectSecret), basicToken.access_token, http)
  await oauth.processRevocationResponse(response)
  const info = await introspect(basicToken.access_token)
  check(info.active === false, 'introspection still says active after revocation', info)
  const api = await recordingFetch(`${AUDIENCE}/projects/${project.id}`, { headers: { authorization: `Bearer ${basicToken.access_token}` } })
  check(api.status === 401, `GET /v1/projects/{id} answered ${api.status}`)
  return 'introspection active=false, API 401'
})

await step('revoking an unknown token answers 200 (RFC 7009 2.2), client_secret_post', async () => {
  const response = await oauth.revocationRequest(as, projectClient, oauth.ClientSecretPost(projectSecret), `unknown-${randomUUID()}`, http)
  await oauth.processRevocationResponse(response)
  const info = await introspect(postToken.access_token)
  check(info.active === true, 'the other client_credentials token should still be active', info)
  return 'accepted; the other token is still active'
})

console.log(`all ${stepNo} steps passed`)
