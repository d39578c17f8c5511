// Drives Cozy's own `cozy-stack-client` against a running `hearth up`, the way
// a Cozy app uses a DocumentCollection, and asserts exact results.
//
// Usage: HEARTH_URL=http://127.0.0.1:port HEARTH_TOKEN=… node compat.mjs
//
// Every check runs even if an earlier one failed, so one run lists every
// incompatibility. A failed check prints the HTTP exchanges it made (what the
// client sent, what Hearth answered), which is what a fix of the API needs.
// Exit code: 0 if every check passed, 1 otherwise, 2 for a usage error.

import assert from 'node:assert/strict'
import { AsyncLocalStorage } from 'node:async_hooks'
import { randomBytes } from 'node:crypto'
import stackClientModule from 'cozy-stack-client'

const CozyStackClient = stackClientModule.default

const uri = process.env.HEARTH_URL
const token = process.env.HEARTH_TOKEN
if (!uri || !token) {
  console.error('compat.mjs: set HEARTH_URL and HEARTH_TOKEN')
  process.exit(2)
}

// The client calls the global `fetch` (Node's own). Recording the exchanges
// around it lets a failed check show the wire traffic; the client itself is
// used unchanged. Each check runs in its own async context, so a check that
// timed out (say, a client loop that never ends) is cut off at its next
// request instead of polluting the checks after it.
const nativeFetch = globalThis.fetch
const currentCheck = new AsyncLocalStorage()
globalThis.fetch = async (url, options = {}) => {
  const state = currentCheck.getStore()
  if (state?.abandoned) throw new Error(`request after check "${state.name}" was abandoned`)
  const entry = {
    method: options.method ?? 'GET',
    url: String(url).replace(uri, ''),
    body: typeof options.body === 'string' ? options.body : undefined
  }
  state?.exchanges.push(entry)
  const response = await nativeFetch(url, options)
  entry.status = response.status
  entry.reply = (await response.clone().text()).slice(0, 600)
  return response
}

let failures = 0

// A daemon that stops answering must fail the run, not hang it.
setTimeout(() => {
  console.log('FAIL the whole run took more than 120 s')
  process.exit(1)
}, 120000).unref()

/** Runs one named check; prints `ok` or `FAIL` with the exchanges it made. */
async function check(name, body, { timeoutMs = 10000 } = {}) {
  const state = { name, exchanges: [], abandoned: false }
  const started = performance.now()
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${timeoutMs} ms (the client may be looping)`)),
      timeoutMs
    )
  })
  try {
    await Promise.race([currentCheck.run(state, body), timeout])
    console.log(`ok   ${name} (${Math.round(performance.now() - started)} ms)`)
  } catch (err) {
    failures += 1
    console.log(`FAIL ${name}`)
    console.log(`     ${describe(err).split('\n').join('\n     ')}`)
    for (const x of state.exchanges.slice(-4)) {
      console.log(`     > ${x.method} ${x.url}${x.body ? ` ${x.body}` : ''}`)
      console.log(`     < ${x.status ?? '(no response)'} ${x.reply ?? ''}`)
    }
  } finally {
    state.abandoned = true
    clearTimeout(timer)
  }
}

function describe(err) {
  if (err instanceof assert.AssertionError) return err.message
  if (err?.name === 'FetchError') {
    return `FetchError ${err.status} ${err.url}: ${err.message}`
  }
  return err?.stack ?? String(err)
}

/** Asserts that `promise` rejects with a FetchError of `status`. */
async function rejectsWith(promise, status, messagePattern) {
  let err
  try {
    await promise
  } catch (e) {
    err = e
  }
  assert.ok(err, `expected an HTTP ${status} error, but the call succeeded`)
  assert.equal(err.name, 'FetchError', describe(err))
  assert.equal(err.status, status, describe(err))
  if (messagePattern) assert.match(err.message, messagePattern)
  return err
}

// A fresh doctype per run, so the script can also run against a used node.
const doctype = `io.cozy.hearthcompat.r${randomBytes(4).toString('hex')}`
const client = new CozyStackClient({ uri, token })
const notes = client.collection(doctype)

/** What `normalizeDoc` makes of a stored record. */
const normalized = (record) => ({ id: record._id, _type: doctype, ...record })
const ids = (docs) => docs.map((d) => d._id)

const SLASHED_ID = 'io.cozy.apps/notes'
let groceries // the record created without an id: { _id, _rev, ... }
let todo
let zoe
let zoeFirstRev

console.log(`cozy-stack-client against ${uri}, doctype ${doctype}`)

await check('create without _id: POST /data/:doctype/ returns the record', async () => {
  const { data } = await notes.create({ title: 'groceries', n: 1, tags: ['a', 'b'] })
  assert.equal(typeof data._id, 'string')
  assert.ok(data._id.length > 0, 'a generated id')
  assert.match(data._rev, /^1-/)
  assert.deepEqual(data, normalized({
    _id: data._id, _rev: data._rev, title: 'groceries', n: 1, tags: ['a', 'b']
  }))
  groceries = { _id: data._id, _rev: data._rev, title: 'groceries', n: 1, tags: ['a', 'b'] }
})

await check('create with a fixed _id: PUT /data/:doctype/:id', async () => {
  const { data } = await notes.create({ _id: 'note-2', title: 'todo', n: 2 })
  assert.match(data._rev, /^1-/)
  assert.deepEqual(data, normalized({ _id: 'note-2', _rev: data._rev, title: 'todo', n: 2 }))
  todo = { _id: 'note-2', _rev: data._rev, title: 'todo', n: 2 }

  const third = await notes.create({ _id: 'note-3', title: 'zoë 🎉', n: 3.5, extra: { x: null } })
  zoe = { _id: 'note-3', _rev: third.data._rev, title: 'zoë 🎉', n: 3.5, extra: { x: null } }
  zoeFirstRev = third.data._rev
  assert.deepEqual(third.data, normalized(zoe))
})

await check('create with an _id that exists fails with 409', async () => {
  await rejectsWith(notes.create({ _id: 'note-2', title: 'again' }), 409, /Document update conflict/)
})

await check('create and get an _id containing a slash (as io.cozy.apps ids do)', async () => {
  const { data } = await notes.create({ _id: SLASHED_ID, slug: 'notes' })
  const got = await notes.get(SLASHED_ID)
  assert.deepEqual(got.data, normalized({ _id: SLASHED_ID, _rev: data._rev, slug: 'notes' }))
  await notes.destroy(got.data)
  assert.deepEqual(await notes.get(SLASHED_ID), { data: null })
})

await check('get returns the exact record', async () => {
  const { data } = await notes.get(groceries._id)
  assert.deepEqual(data, normalized(groceries))
})

await check('get of a missing id resolves to { data: null }', async () => {
  assert.deepEqual(await notes.get('no-such-note'), { data: null })
})

await check('update with the current _rev bumps the revision', async () => {
  const { data: current } = await notes.get('note-3')
  const { data } = await notes.update({ ...current, n: 4 })
  assert.match(data._rev, /^2-/)
  assert.equal(data._id, 'note-3')
  assert.equal(data.n, 4)
  zoe = { ...zoe, _rev: data._rev, n: 4 }
  const { data: reread } = await notes.get('note-3')
  assert.equal(reread._rev, data._rev)
  assert.equal(reread.n, 4)
  assert.equal(reread.title, 'zoë 🎉')
  assert.deepEqual(reread.extra, { x: null })
})

await check('update does not store the _type the client sends (cozy-stack drops it)', async () => {
  // The client sends back the normalized document, `_type` included;
  // cozy-stack removes `_type` before writing, so raw reads never show it.
  const raw = await notes.fetchChangesRaw({ includeDocs: true })
  const row = raw.results.find((r) => r.id === 'note-3')
  assert.ok(row?.doc, 'note-3 is in the feed with its doc')
  assert.equal(row.doc._type, undefined, `stored record: ${JSON.stringify(row.doc)}`)
})

await check('update with a stale _rev fails with 409 Document update conflict', async () => {
  await rejectsWith(
    notes.update({ ...zoe, _rev: zoeFirstRev, n: 5 }),
    409,
    /Document update conflict/
  )
  const { data } = await notes.get('note-3')
  assert.equal(data.n, 4, 'the refused write changed nothing')
  assert.equal(data._rev, zoe._rev)
})

await check('a wrong token fails with 401', async () => {
  const intruder = new CozyStackClient({ uri, token: `${token}x` }).collection(doctype)
  await rejectsWith(intruder.get('note-2'), 401)
})

await check('all() pages through _normal_docs in _id order', async () => {
  const expected = [groceries, todo, zoe].sort((a, b) => (a._id < b._id ? -1 : 1))
  const page = await notes.all()
  assert.deepEqual(page.data, expected.map(normalized))
  assert.deepEqual(page.meta, { count: 3 })
  assert.equal(page.next, false)
  assert.equal(page.skip, 0)

  const first = await notes.all({ limit: 2 })
  assert.deepEqual(ids(first.data), ids(expected.slice(0, 2)))
  assert.equal(first.next, true)
  const second = await notes.all({ limit: 2, skip: 2 })
  assert.deepEqual(ids(second.data), ids(expected.slice(2)))
  assert.equal(second.next, false)
})

await check('all({ limit: null }) lists everything through _all_docs', async () => {
  const page = await notes.all({ limit: null })
  const expected = [groceries, todo, zoe].sort((a, b) => (a._id < b._id ? -1 : 1))
  assert.deepEqual(page.data, expected.map(normalized))
  assert.deepEqual(page.meta, { count: 3 })
})

await check('all({ keys }) fetches only those ids: GET _all_docs?keys=[…]', async () => {
  const page = await notes.all({ keys: ['note-3', 'missing', 'note-2'] })
  assert.deepEqual(page.data, [normalized(zoe), normalized(todo)])
})

await check('getAll(ids) posts keys to _all_docs, in key order', async () => {
  const { data, meta } = await notes.getAll(['note-3', 'nope', 'note-2'])
  assert.deepEqual(data, [normalized(zoe), normalized(todo)])
  assert.deepEqual(meta, { count: 2 })
})

await check('find(selector, { sort, limit, fields }) through _find', async () => {
  const found = await notes.find(
    { n: { $gte: 2 } },
    { sort: [{ n: 'desc' }], fields: ['title', 'n'], limit: 10 }
  )
  assert.deepEqual(found.data, [
    normalized({ _id: 'note-3', _rev: zoe._rev, title: 'zoë 🎉', n: 4 }),
    normalized({ _id: 'note-2', _rev: todo._rev, title: 'todo', n: 2 })
  ])
  assert.equal(found.next, false)
  assert.equal(found.skip, 0)
})

await check('find on operators the stack supports ($in, $exists, nested $or)', async () => {
  const found = await notes.find(
    { $or: [{ title: { $in: ['todo', 'groceries'] } }, { extra: { $exists: true } }] },
    { sort: [{ n: 'asc' }], indexedFields: ['n'], fields: ['n'] }
  )
  assert.deepEqual(ids(found.data), [groceries._id, 'note-2', 'note-3'])
})

await check('createIndex defines a named index via _index, then reports it exists', async () => {
  const index = await notes.createIndex(['n'], { indexName: 'by_n' })
  assert.deepEqual(index, { id: '_design/by_n', fields: ['n'] })
  const again = await notes.createIndex(['n'], { indexName: 'by_n' })
  assert.deepEqual(again, { id: '_design/by_n', fields: ['n'] })
  const found = await notes.find({ n: { $gt: 1 } }, { indexId: index.id, sort: [{ n: 'asc' }], fields: ['n'] })
  assert.deepEqual(ids(found.data), ['note-2', 'note-3'])
})

await check('find pages with limit and skip, and reports next', async () => {
  const first = await notes.find({ n: { $gt: 0 } }, { sort: [{ n: 'asc' }], limit: 1 })
  assert.deepEqual(first.data, [normalized(groceries)])
  assert.equal(first.next, true)
  const last = await notes.find({ n: { $gt: 0 } }, { sort: [{ n: 'asc' }], limit: 1, skip: 2 })
  assert.deepEqual(last.data, [normalized(zoe)])
  assert.equal(last.skip, 2)
})

await check('findAll follows the bookmark across pages', async () => {
  const docs = await notes.findAll({ n: { $gt: 0 } }, { sort: [{ n: 'asc' }], limit: 1 })
  assert.deepEqual(docs, [normalized(groceries), normalized(todo), normalized(zoe)])
}, { timeoutMs: 10000 })

await check('checkUniquenessOf uses an index on the property', async () => {
  assert.equal(await notes.checkUniquenessOf('title', 'todo'), false)
  assert.equal(await notes.checkUniquenessOf('title', 'nothing like it'), true)
})

await check('fetchAllMangoIndexes lists mango design docs: GET _design_docs', async () => {
  const indexes = await notes.fetchAllMangoIndexes()
  const byN = indexes.find((index) => index._id === '_design/by_n')
  assert.ok(byN, `by_n is listed, got ${JSON.stringify(indexes)}`)
  assert.equal(byN.language, 'query')
  assert.deepEqual(Object.keys(byN.views.by_n.map.fields), ['n'])
})

let changesBefore
await check('fetchChanges() lists live documents and a last_seq', async () => {
  const { newLastSeq, documents } = await notes.fetchChanges()
  assert.equal(typeof newLastSeq, 'string')
  assert.deepEqual(documents, [normalized(groceries), normalized(todo), normalized(zoe)])
  changesBefore = newLastSeq
})

await check('destroy with the current _rev deletes; get then finds nothing', async () => {
  const { data } = await notes.destroy(zoe)
  assert.equal(data._id, 'note-3')
  assert.equal(data._deleted, true)
  assert.equal(typeof data._rev, 'string')
  assert.notEqual(data._rev, zoe._rev)
  assert.deepEqual(await notes.get('note-3'), { data: null })
  const page = await notes.all()
  assert.deepEqual(ids(page.data), ids([groceries, todo].sort((a, b) => (a._id < b._id ? -1 : 1))))
})

await check('destroy with a stale _rev fails with 409', async () => {
  await rejectsWith(notes.destroy({ ...todo, _rev: `${todo._rev.split('-')[0]}-0000` }), 409)
  assert.equal((await notes.get('note-2')).data._rev, todo._rev)
})

await check('fetchChanges({ since }) returns only what changed since', async () => {
  const deleted = await notes.fetchChanges({ since: changesBefore })
  assert.deepEqual(deleted.documents, [], 'deletions are filtered out by default')
  const withDeleted = await notes.fetchChanges({ since: changesBefore }, { includeDeleted: true })
  assert.deepEqual(ids(withDeleted.documents), ['note-3'])
  assert.equal(withDeleted.documents[0]._deleted, true)

  const { data: created } = await notes.create({ _id: 'note-4', title: 'later', n: 7 })
  const later = await notes.fetchChanges({ since: deleted.newLastSeq })
  assert.deepEqual(later.documents, [normalized({ _id: 'note-4', _rev: created._rev, title: 'later', n: 7 })])
  assert.notEqual(later.newLastSeq, deleted.newLastSeq)
  const none = await notes.fetchChanges({ since: later.newLastSeq })
  assert.deepEqual(none.documents, [])
  assert.equal(none.newLastSeq, later.newLastSeq)
  await notes.destroy(created)
})

await check('fetchChangesRaw returns CouchDB-shaped rows', async () => {
  const raw = await notes.fetchChangesRaw({ since: changesBefore, limit: 1 })
  assert.equal(raw.results.length, 1)
  const [row] = raw.results
  assert.equal(row.id, 'note-3')
  assert.equal(row.deleted, true)
  assert.equal(typeof row.seq, 'string')
  assert.equal(typeof row.changes[0].rev, 'string')
  assert.equal(typeof raw.last_seq, 'string')
})

await check('updateAll writes a batch through _bulk_docs', async () => {
  const { data: current } = await notes.get('note-2')
  const result = await notes.updateAll([{ ...current, n: 20 }, { _id: 'note-5', title: 'bulk', n: 9 }])
  assert.equal(result.length, 2)
  assert.deepEqual(result.map((r) => [r.ok, r.id]), [[true, 'note-2'], [true, 'note-5']])
  assert.match(result[0].rev, /^2-/)
  assert.equal((await notes.get('note-2')).data.n, 20)
  assert.equal((await notes.get('note-5')).data.title, 'bulk')
})

await check('destroyAll deletes a batch through _bulk_docs', async () => {
  const { data: six } = await notes.create({ _id: 'note-6', n: 6 })
  const { data: seven } = await notes.create({ _id: 'note-7', n: 7 })
  const result = await notes.destroyAll([six, seven])
  assert.deepEqual(result.map((r) => [r.ok, r.id]), [[true, 'note-6'], [true, 'note-7']])
  assert.deepEqual(await notes.get('note-6'), { data: null })
  assert.deepEqual(await notes.get('note-7'), { data: null })
})

console.log(failures === 0 ? 'all checks passed' : `${failures} check(s) failed`)
process.exit(failures === 0 ? 0 : 1)
