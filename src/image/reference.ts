// Image references in the grammar of github.com/distribution/reference, normalised the way
// docker and containerd do it ("normalized named"): a missing domain means Docker Hub, a
// single-component Hub path lives under library/, and a reference with neither tag nor digest
// means :latest. Every image name the kubelet sends goes through parseReference first.

import { InvalidArgumentError } from '../errors';

export interface ImageReference {
  /** Registry host as written (lowercase DNS name or IP, optional port); docker.io for Hub. */
  domain: string;
  /** Repository path inside the registry, e.g. library/busybox. */
  path: string;
  tag?: string;
  /** Always sha256:<64 lowercase hex>. */
  digest?: string;
}

export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';

// distribution/reference limits the whole name (domain and path) to 255 characters.
const NAME_TOTAL_LENGTH_MAX = 255;

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const IPV6_HOST = '\\[(?:[a-fA-F0-9:]+)\\]';
const DOMAIN_RE = new RegExp(`^(?:${IPV6_HOST}|${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*)(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const SHA256_DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
// The general digest grammar, used only to tell "unsupported algorithm" from "garbage".
const ANY_DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

/**
 * True for an image id rather than a name: 64 hex characters, bare or with the sha256:
 * prefix. Docker refuses such strings as repository names so that an id can never be
 * mistaken for a name; CRI callers pass either form to ImageStatus/RemoveImage.
 */
export function isImageId(s: string): boolean {
  return HEX64_RE.test(s) || SHA256_DIGEST_RE.test(s);
}

/** True for a digest this runtime can verify (sha256 only). */
export function isDigest(s: string): boolean {
  return SHA256_DIGEST_RE.test(s);
}

/** Throws unless `d` is a sha256 digest; `context` names what it belongs to. */
export function checkDigest(d: string, context: string): string {
  if (SHA256_DIGEST_RE.test(d)) return d;
  if (ANY_DIGEST_RE.test(d)) {
    throw new InvalidArgumentError(`${context}: unsupported digest algorithm in "${d}" (only sha256 is supported)`);
  }
  throw new InvalidArgumentError(`${context}: invalid digest "${d}"`);
}

function invalid(input: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`invalid image reference "${input}": ${why}`);
}

/**
 * Parses and normalises a docker-style reference. A name with neither tag nor digest gets
 * :latest; a name with both keeps both (the digest is what gets pulled, the tag is kept for
 * display, as containerd does).
 */
export function parseReference(input: string): ImageReference {
  const s = input;
  if (s === '') throw invalid(input, 'empty reference');
  if (s.trim() !== s) throw invalid(input, 'leading or trailing whitespace');
  if (HEX64_RE.test(s)) {
    throw invalid(input, 'a 64-character hexadecimal string is an image id, not a repository name');
  }

  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (SHA256_DIGEST_RE.test(d)) {
      digest = d;
    } else if (ANY_DIGEST_RE.test(d)) {
      throw invalid(input, `unsupported digest algorithm "${d.split(':')[0]}" (only sha256 is supported)`);
    } else {
      throw invalid(input, `invalid digest "${d}" (expected sha256:<64 lowercase hex>)`);
    }
  }

  // The tag separator is the last ':' after the last '/', so a port in the domain is not a tag.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(input, `invalid tag "${tag}"`);
  }
  if (rest === '') throw invalid(input, 'missing repository name');

  let domain: string;
  let path: string;
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  // Same rule as docker: the first component is a registry only if it could not be a
  // Hub namespace (contains '.' or ':', or is localhost). distribution also treats an
  // uppercase first component as a domain so that the error below is about the domain.
  if (slash >= 0 && (/[.:]/.test(first) || first === 'localhost' || first.toLowerCase() !== first)) {
    domain = first;
    path = rest.slice(slash + 1);
  } else {
    domain = DEFAULT_DOMAIN;
    path = rest;
  }

  if (!DOMAIN_RE.test(domain)) throw invalid(input, `invalid registry domain "${domain}"`);
  domain = domain.toLowerCase();
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;

  if (path === '') throw invalid(input, 'missing repository path');
  if (path.toLowerCase() !== path) throw invalid(input, 'repository name must be lowercase');
  for (const component of path.split('/')) {
    if (!PATH_COMPONENT_RE.test(component)) {
      throw invalid(input, `invalid repository path component "${component}"`);
    }
  }
  if (domain === DEFAULT_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;
  if (domain.length + 1 + path.length > NAME_TOTAL_LENGTH_MAX) {
    throw invalid(input, `repository name longer than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const ref: ImageReference = { domain, path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `domain/path`, the name an image is filed under (CRI repo tags and repo digests use it). */
export function repository(r: ImageReference): string {
  return `${r.domain}/${r.path}`;
}

/** The fully-qualified string: `domain/path[:tag][@digest]`. */
export function formatReference(r: ImageReference): string {
  let s = repository(r);
  if (r.tag !== undefined) s += `:${r.tag}`;
  if (r.digest !== undefined) s += `@${r.digest}`;
  return s;
}

/** The same repository with only this tag (the form of a CRI repo tag). */
export function withTag(r: ImageReference, tag: string): ImageReference {
  if (!TAG_RE.test(tag)) throw new InvalidArgumentError(`invalid tag "${tag}" for ${repository(r)}`);
  return { domain: r.domain, path: r.path, tag };
}

/** The same repository pinned to this digest only (the form of a CRI repo digest). */
export function withDigest(r: ImageReference, digest: string): ImageReference {
  checkDigest(digest, repository(r));
  return { domain: r.domain, path: r.path, digest };
}

/**
 * What to ask the registry for in /v2/<path>/manifests/<this>: the digest when there is
 * one, since that is what the user pinned, else the tag.
 */
export function manifestReference(r: ImageReference): string {
  return r.digest ?? r.tag ?? DEFAULT_TAG;
}
