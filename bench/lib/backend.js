// The benches' backend: nginx answering a fixed ~95-byte JSON body when nginx is installed (it
// costs the machine far less per request than any Node server), else peers/backend.js.
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, freePort, start, waitHttp } from './children.js'

export const BODY = '{"ok":true,"service":"switchyard-bench-backend","message":"hello from the backend","n":12345}'

/** The first executable `bin` on PATH or in `extra` directories, else null. */
export function which (bin, extra = []) {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...extra]) {
    const p = path.join(dir, bin)
    try { fs.accessSync(p, fs.constants.X_OK); return p } catch {}
  }
  return null
}

/** nginx, unless BENCH_NO_NGINX=1 or it is not installed. */
export function findNginx () {
  return process.env.BENCH_NO_NGINX === '1' ? null : which('nginx', ['/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin'])
}

function nginxConf (prefix, server) {
  const dirs = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((d) => `${d}_temp_path ${prefix}/${d};`).join(' ')
  return `daemon off; master_process off; worker_processes 1;
pid ${prefix}/nginx.pid; error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http { access_log off; ${dirs}
  keepalive_requests 1000000; keepalive_timeout 300s;
  ${server}
}
`
}

/** One nginx worker under `tmp/name` with `server` (its `PORT` replaced by `port`). */
export async function startNginx (nginx, tmp, name, port, server) {
  const prefix = path.join(tmp, name)
  fs.mkdirSync(prefix, { recursive: true })
  fs.writeFileSync(path.join(prefix, 'nginx.conf'), nginxConf(prefix, server.replace('PORT', port)))
  const child = start(name, nginx, ['-p', prefix, '-c', path.join(prefix, 'nginx.conf')])
  await waitHttp(child, port)
  return child
}

/** A backend answering BODY on a free port: `{ child, port, url }`. */
export async function startBackend (nginx, tmp, name = 'backend') {
  const port = await freePort()
  let child
  if (nginx) {
    child = await startNginx(nginx, tmp, `${name}-nginx`, port,
      `server { listen 127.0.0.1:PORT; location / { default_type application/json; return 200 '${BODY}'; } }`)
  } else {
    child = start(`${name}-node`, process.execPath, [path.join(ROOT, 'bench', 'peers', 'backend.js'), String(port)])
    await waitHttp(child, port)
  }
  return { child, port, url: `http://127.0.0.1:${port}` }
}

/**
 * The bench route's switchyard config: upstreams v1 and v2 on `backend`, a header rule that never
 * matches, split 100/0, sticky by `x-user-id`, memory store.
 * `shadow`: the url of a second backend the bench route mirrors 10 % of its requests to. */
export function switchyardConfig (port, backend, adminPort = 0, extra = '', shadow = null) {
  return `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
${extra}
store: { type: memory }
upstreams:
  v1: { targets: [ { url: "${backend}" } ] }
  v2: { targets: [ { url: "${backend}" } ] }
${shadow ? `  shadow: { targets: [ { url: "${shadow}" } ] }` : ''}
routes:
  - name: bench
    match: { host: "*", pathPrefix: / }
    rules:
      - { match: { header: { x-bench-never: "1" } }, upstream: v2 }
    split: { v1: 100, v2: 0 }
    sticky: { by: header, name: x-user-id }
${shadow ? '    mirror: { upstream: shadow, percent: 10 }' : ''}
`
}

