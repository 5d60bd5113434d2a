import { describe, expect, it } from 'vitest'
import { normalizePath } from '../src/dataplane/normalize-path.js'
import { pathOf } from '../src/dataplane/match.js'

describe('normalizePath (RFC 3986 §5.2.4 remove_dot_segments)', () => {
  it.each([
    // nothing to resolve: the very same string comes back
    ['/', '/'],
    ['/a/b/c', '/a/b/c'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/.b/..c/...', '/a/.b/..c/...'],
    ['/a/b.c/d..', '/a/b.c/d..'],
    ['/a/%2efoo', '/a/%2efoo'],
    ['/a/%2F..%2Fb', '/a/%2F..%2Fb'],
    ['/a//b', '/a//b'],
    ['/a?x=/../y', '/a?x=/../y'],
    ['/a?/./', '/a?/./'],
    // RFC 3986 §5.2.4's own example
    ['/a/b/c/./../../g', '/a/g'],
    // RFC 3986 §5.4 examples (base http://a/b/c/d;p?q), as the merged paths they resolve
    ['/b/c/./g', '/b/c/g'],
    ['/b/c/.', '/b/c/'],
    ['/b/c/./', '/b/c/'],
    ['/b/c/..', '/b/'],
    ['/b/c/../', '/b/'],
    ['/b/c/../g', '/b/g'],
    ['/b/c/../..', '/'],
    ['/b/c/../../', '/'],
    ['/b/c/../../g', '/g'],
    ['/b/c/../../../g', '/g'],
    ['/b/c/../../../../g', '/g'],
    ['/./g', '/g'],
    ['/../g', '/g'],
    ['/b/c/g.', '/b/c/g.'],
    ['/b/c/.g', '/b/c/.g'],
    ['/b/c/g..', '/b/c/g..'],
    ['/b/c/..g', '/b/c/..g'],
    ['/b/c/./../g', '/b/g'],
    ['/b/c/./g/.', '/b/c/g/'],
    ['/b/c/g/./h', '/b/c/g/h'],
    ['/b/c/g/../h', '/b/c/h'],
    ['/b/c/g;x=1/./y', '/b/c/g;x=1/y'],
    ['/b/c/g;x=1/../y', '/b/c/y'],
    ['/b/c/g?y/./x', '/b/c/g?y/./x'],
    ['/b/c/g?y/../x', '/b/c/g?y/../x'],
    ['/b/c/g#s/./x', '/b/c/g#s/./x'],
    // above the root stays at the root
    ['/..', '/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a/../../../b', '/b'],
    // trailing dot segments
    ['/a/.', '/a/'],
    ['/.', '/'],
    ['/a/b/..', '/a/'],
    // percent-encoded dots, any case, mixed with literal ones
    ['/%2e%2e/', '/'],
    ['/%2E%2E/etc/passwd', '/etc/passwd'],
    ['/a/%2e/b', '/a/b'],
    ['/a/%2E/b', '/a/b'],
    ['/a/b/.%2e/c', '/a/c'],
    ['/a/b/%2e./c', '/a/c'],
    ['/a/b/%2e%2E/c', '/a/c'],
    ['/a/b/%2e%2e', '/a/'],
    ['/a/%2e%2e%2e/b', '/a/%2e%2e%2e/b'],
    ['/a/%2/b', '/a/%2/b'],
    // encoded slashes are not separators and stay encoded
    ['/a/..%2Fb', '/a/..%2Fb'],
    ['/a/b%2F../c', '/a/b%2F../c'],
    ['/a%2Fb/../c', '/c'],
    ['/a/%2F/../c', '/a/c'],
    // empty segments are kept; `..` removes one, empty or not
    ['/a//../b', '/a/b'],
    ['//../b', '/b'],
    ['/a/b//./c', '/a/b//c'],
    // the query is kept as sent, dots and all
    ['/a/../b?x=../y&z=./w', '/b?x=../y&z=./w'],
    ['/a/./?', '/a/?'],
    ['/a/..?q', '/?q'],
    // not an absolute path: left alone
    ['*', '*'],
    ['example.com:443', 'example.com:443'],
  ])('%s → %s', (input, expected) => {
    expect(normalizePath(input)).toBe(expected)
  })

  it('returns the same string (no copy) when there is nothing to normalize', () => {
    const path = `/api/v1/users/${'x'.repeat(40)}?q=1`
    expect(Object.is(normalizePath(path), path)).toBe(true)
  })
})

describe('pathOf', () => {
  it.each([
    ['/a/../b?q', '/a/../b?q'],
    ['http://h/a/../b', '/a/../b'],
    ['http://h:8080/a?x', '/a?x'],
    ['HTTP://user@h/%2e%2e/x', '/%2e%2e/x'],
    ['http://h', '/'],
    ['http://h?x=1', '/?x=1'],
    ['*', '*'],
    ['h:443', 'h:443'],
  ])('%s → %s', (target, expected) => {
    expect(pathOf(target)).toBe(expected)
  })
})
