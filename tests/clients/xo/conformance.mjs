// Xen Orchestra's own XAPI client (npm `xen-api`, pinned in
// package-lock.json) against an XAPI endpoint, as XO uses it.
//
//   node conformance.mjs URL TRANSPORT HOST_REF VM_NAME
//
// TRANSPORT is `json-rpc` or `xml-rpc` (the client's own names; XO's
// default `auto` tries JSON-RPC first). Each step prints one transcript line
// on stdout: `STEP <name> <json>`; the last line is `RESULT <json>` with
// what the Python test asserts on. Any unexpected failure exits non-zero.
import { createClient } from 'xen-api'

const [url, transport, hostRef, vmName] = process.argv.slice(2)
const result = { transport }

function step(name, value) {
  console.log('STEP ' + name + ' ' + JSON.stringify(value))
}

function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error('timed out: ' + what)), ms)
    }),
  ])
}

async function until(predicate, what) {
  const deadline = Date.now() + 15e3
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

function errorOf(error) {
  return { code: error.code, params: error.params }
}

const xapi = createClient({
  url,
  auth: { user: 'root', password: 'conformance' },
  transport,
  allowUnauthorized: true,
  debounce: 20,
})

async function main() {
  // connect: session.login_with_password, pool.get_all_records,
  // system.listMethods (the types), then the event loop starts
  await withTimeout(xapi.connect(), 15e3, 'connect')
  result.session = xapi.sessionId
  result.pool = xapi.pool.$ref
  step('connect', { session: xapi.sessionId, pool: xapi.pool.$ref, status: xapi.status })

  // records: the event loop's initial fetch (get_all_records per type) and
  // direct calls
  await withTimeout(xapi.objectsFetched, 15e3, 'initial fetch')
  const byType = {}
  for (const object of Object.values(xapi.objects.all)) {
    byType[object.$type] = (byType[object.$type] ?? 0) + 1
  }
  result.cached = byType
  step('objects', byType)
  const records = {}
  for (const type of ['host', 'VM', 'VIF', 'PIF', 'network']) {
    records[type] = await xapi.getAllRecords(type)
  }
  const host = records.host.find(h => h.$ref === hostRef)
  const vm = records.VM.find(v => v.name_label === vmName)
  const pif = records.PIF.find(p => p.host === hostRef && p.VLAN === -1) ??
    records.PIF.find(p => p.host === hostRef && p.VLAN === '-1')
  result.records = {
    hosts: records.host.length,
    vms: records.VM.length,
    vifs: records.VIF.length,
    pifs: records.PIF.length,
    host_name: host?.name_label,
    vm_vifs: vm?.VIFs.length,
    vm_tags: vm?.tags,
    vm_domid: vm?.domid,
    pif_device: pif?.device,
    pif_vlan: pif?.VLAN,
    pif_properties: pif?.properties,
    empty_description: vm?.name_description,
  }
  step('records', result.records)

  // events: a change made through the API reaches the client's cache
  await xapi.call('VM.add_to_other_config', vm.$ref, 'xo-conformance', transport)
  await until(() => xapi.getObjectByRef(vm.$ref).other_config['xo-conformance'] === transport,
    'the VM change event')
  await xapi.call('VM.remove_from_other_config', vm.$ref, 'xo-conformance')
  await until(() => xapi.getObjectByRef(vm.$ref).other_config['xo-conformance'] === undefined,
    'the second VM change event')
  result.events = 'followed'
  step('events', { vm: vm.$ref, seen: ['add key', 'remove key'] })

  // plugin calls, synchronous
  const plugin = async (fn, args) =>
    JSON.parse(await xapi.call('host.call_plugin', hostRef, 'netoffload', fn, args))
  const version = await plugin('version', {})
  step('call_plugin version', version)
  const status = await plugin('status', { vm: vmName })
  step('call_plugin status', { devices: status.devices.length, summary: status.summary })
  const policy = await plugin('get_policy', {})
  step('call_plugin get_policy', { policies: policy.policies.length })
  const dry = await plugin('apply', { vm: vmName, policy: 'tx-off', dry_run: 'true' })
  step('call_plugin apply dry_run', { dry_run: dry.dry_run, summary: dry.summary })
  result.plugin = {
    version: version.version,
    status_devices: status.devices.length,
    policies: policy.policies.length,
    dry_run: dry.dry_run,
  }

  // plugin call with callAsync: Async.host.call_plugin returns a task, the
  // client follows it through event.from until it succeeds
  const tasksBefore = Object.values(xapi.objects.all).filter(o => o.$type === 'task').length
  const asyncText = await withTimeout(
    xapi.callAsync('host.call_plugin', hostRef, 'netoffload', 'status', { vm: vmName }),
    60e3, 'callAsync')
  const asyncStatus = JSON.parse(asyncText)
  result.async = { devices: asyncStatus.devices.length, text: asyncText }
  step('callAsync status', { task_result_devices: asyncStatus.devices.length, tasks_before: tasksBefore })

  // a plugin error arrives with its NETOFFLOAD_* code and params, sync and
  // through a failed task
  try {
    await plugin('apply', { vm: 'no such vm \u00e9' })
    throw new Error('the plugin call did not fail')
  } catch (error) {
    if (error.code === undefined) throw error
    result.error = errorOf(error)
    step('call_plugin error', result.error)
  }
  try {
    await withTimeout(xapi.callAsync('host.call_plugin', hostRef, 'netoffload', 'apply',
      { vm: 'no such vm \u00e9' }), 60e3, 'failing callAsync')
    throw new Error('the async plugin call did not fail')
  } catch (error) {
    if (error.code === undefined) throw error
    result.async_error = errorOf(error)
    result.async_error_task_status = error.task?.status
    step('callAsync error', { ...result.async_error, task_status: error.task?.status })
  }
  // an API error, for the error form
  try {
    await xapi.call('VM.get_record', 'OpaqueRef:00000000-0000-0000-0000-000000000000')
    throw new Error('get_record of a bad ref did not fail')
  } catch (error) {
    if (error.code === undefined) throw error
    result.api_error = errorOf(error)
    step('api error', result.api_error)
  }

  await xapi.disconnect()
  step('disconnect', { status: xapi.status })
  console.log('RESULT ' + JSON.stringify(result))
}

main().then(
  () => process.exit(0),
  error => {
    console.error('FAILED', error?.stack ?? error, error?.code, error?.params)
    process.exit(1)
  }
)
