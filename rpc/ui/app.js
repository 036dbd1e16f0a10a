// The cmnode dashboard: four views (nodes, jobs, a job, create) over the node's JSON-RPC API, kept live by one
// read of GET /events (wire.js). No build step: these files and Alpine.js's CSP build (vendor/, see MANIFEST.json)
// are served by the node itself under a Content-Security-Policy that allows no inline script and no eval, which is
// why every component is registered here by name and the templates only call into it. One file for the four views:
// they share the stores, the helpers and the event handlers' shape, and each is a plain object Alpine registers.
'use strict';

(function () {
  const { TOKEN_KEY, rpc, describe, SseParser, onEvent, emit, openStream, readStream, feed } = window.cmnode;
  const { debounce, bytes, pairs, list, words } = window.cmnode;
  const FINAL = ['complete', 'failed', 'cancelled', 'lost', 'rejected'];
  const STATUSES = ['pending', 'pulling', 'running', 'complete', 'failed', 'cancelled', 'lost', 'rejected', 'released'];
  const PAGE_SIZE = 20;
  const TAIL = 2000; // lines of output a job's page starts from
  const MAX_LOG_TEXT = 1000000; // characters of followed output kept in the page

  let followSeq = 0;

  // -- what every view shows the same way ----------------------------------------------------------------------

  const helpers = {
    nameOf(nodeId) {
      const names = Alpine.store('node').names;
      return names[nodeId] || this.shortNode(nodeId);
    },
    shortNode(nodeId) {
      return nodeId ? nodeId.slice(0, 16) + '…' : '';
    },
    shortJob(jobId) {
      return jobId ? jobId.slice(0, 8) : '';
    },
    labelList(labels) {
      return Object.entries(labels || {}).map(([k, v]) => k + '=' + v);
    },
    when(ts) {
      return ts ? new Date(ts * 1000).toLocaleString() : '';
    },
    ago(ts) {
      if (!ts) return '';
      const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
      return s < 90 ? s + ' s ago' : Math.round(s / 60) + ' min ago';
    },
  };

  async function refreshNames() {
    try {
      const result = await rpc('NodeService.List', {});
      const names = {};
      for (const n of result.nodes) names[n.node_id] = n.name;
      Alpine.store('node').names = names;
      return result;
    } catch (error) {
      return null;
    }
  }

  // -- the views -----------------------------------------------------------------------------------------------

  function parseRoute() {
    const hash = location.hash.replace(/^#\/?/, '');
    const [path, search] = hash.split('?');
    const query = Object.fromEntries(new URLSearchParams(search || ''));
    const parts = path.split('/').filter((p) => p);
    if (parts[0] === 'job' && parts[1]) return { page: 'job', id: decodeURIComponent(parts[1]), query: query };
    if (['nodes', 'jobs', 'create'].includes(parts[0])) return { page: parts[0], id: '', query: query };
    return { page: 'nodes', id: '', query: query };
  }

  document.addEventListener('alpine:init', () => {
    Alpine.store('auth', {
      needed: false,
      value: '',
      error: '',
      ask(error) {
        sessionStorage.removeItem(TOKEN_KEY);
        feed.stop();
        Alpine.store('live').set('locked', 'waiting for the token');
        this.error = error || '';
        this.needed = true;
      },
      async submit() {
        const token = this.value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        this.value = '';
        this.error = '';
        this.needed = false;
        await boot();
      },
    });
    Alpine.store('live', {
      state: 'connecting',
      detail: '',
      count: 0,
      set(state, detail) {
        this.state = state;
        this.detail = detail;
      },
    });
    Alpine.store('node', { node_id: '', name: '', names: {} });
    Alpine.store('route', { page: 'nodes', id: '', query: {}, error: '' });

    Alpine.data('shell', () => ({
      init() {
        window.addEventListener('hashchange', () => this.route());
        this.route();
        boot();
      },
      route() {
        const store = Alpine.store('route');
        const next = parseRoute();
        store.error = '';
        store.page = next.page;
        store.id = next.id;
        store.query = next.query;
      },
      navClass(page) {
        return Alpine.store('route').page === page ? 'active' : '';
      },
    }));

    Alpine.data('nodesView', () => ({
      ...helpers,
      nodes: [],
      peers: [],
      init() {
        this.reload = debounce(() => this.fetch(), 200);
        this.off = onEvent((event) => {
          if (['reload', 'node', 'execution', 'allocation'].includes(event.type)) this.reload();
        });
        this.fetch();
      },
      destroy() {
        this.off();
      },
      async fetch() {
        try {
          const [nodes, peers] = await Promise.all([refreshNames(), rpc('NodeService.Peers', {})]);
          if (nodes) this.nodes = nodes.nodes;
          this.peers = peers.peers;
        } catch (error) {
          Alpine.store('route').error = describe(error);
        }
      },
      capacity(n) {
        const c = n.capacity || {};
        if (c.cpus === null || c.cpus === undefined) return 'not known yet';
        return c.cpus + ' CPU, ' + bytes(c.memory);
      },
      load(n) {
        const a = n.allocated || {};
        return n.running + ' running, ' + n.queue_depth + ' queued, ' + (a.jobs || 0) + ' allocated';
      },
      addresses(p) {
        return (p.addresses || []).join(' ');
      },
    }));

    Alpine.data('jobsView', () => ({
      ...helpers,
      statuses: STATUSES,
      status: '',
      labels: '',
      jobs: [],
      limit: PAGE_SIZE,
      cursors: [null],
      page: 0,
      nextCursor: null,
      loaded: false,
      init() {
        // #/jobs?status=running&labels=team%3Dweb&limit=50 opens the page so filtered (a link to share)
        const query = Alpine.store('route').query;
        this.status = STATUSES.includes(query.status) ? query.status : '';
        this.labels = query.labels || '';
        this.limit = Math.min(1000, Math.max(1, Number(query.limit) || PAGE_SIZE));
        this.reload = debounce(() => this.load(), 200);
        this.off = onEvent((event) => this.onEvent(event));
        this.load();
      },
      destroy() {
        this.off();
      },
      async load() {
        const params = { limit: this.limit };
        try {
          if (this.status) params.status = this.status;
          const labels = pairs(this.labels);
          if (Object.keys(labels).length) params.labels = labels;
          if (this.cursors[this.page]) params.cursor = this.cursors[this.page];
          const result = await rpc('ContainerService.List', params);
          this.jobs = result.jobs;
          this.nextCursor = result.next_cursor;
          this.loaded = true;
          Alpine.store('route').error = '';
        } catch (error) {
          Alpine.store('route').error = describe(error);
        }
      },
      apply() {
        this.cursors = [null];
        this.page = 0;
        this.load();
      },
      older() {
        if (!this.nextCursor) return;
        this.cursors[this.page + 1] = this.nextCursor;
        this.page += 1;
        this.load();
      },
      newer() {
        if (this.page === 0) return;
        this.page -= 1;
        this.load();
      },
      onEvent(event) {
        const d = event.data;
        if (event.type === 'reload') {
          this.load();
          return;
        }
        if (event.type === 'job') {
          if (this.page === 0) this.reload();
          return;
        }
        const shown = this.jobs.find((j) => j.job_id === d.job_id);
        if (!shown) return;
        if (event.type === 'execution' && d.status) {
          shown.status = d.status;
          if (this.status && d.status !== this.status) this.reload();
        } else if (event.type === 'cancel') {
          this.reload();
        }
      },
    }));

    Alpine.data('jobView', () => ({
      ...helpers,
      jobId: '',
      job: null,
      error: '',
      message: '',
      stopping: false,
      logs: null,
      logNode: '',
      progress: {},
      follow: true,
      follower: null,
      init() {
        this.jobId = Alpine.store('route').id;
        this.$watch('$store.route.id', (id) => this.open(id)); // from one job's page to another's
        this.reload = debounce(() => this.load(), 150);
        this.off = onEvent((event) => {
          if (event.type === 'progress') this.onProgress(event.data);
          else if (event.type === 'reload' || (event.data && event.data.job_id === this.jobId)) this.reload();
        });
        this.load();
      },
      destroy() {
        this.off();
        this.stopFollow();
      },
      open(id) {
        if (!id || id === this.jobId || Alpine.store('route').page !== 'job') return;
        this.stopFollow();
        Object.assign(this, { jobId: id, job: null, error: '', message: '', logs: null, logNode: '', progress: {} });
        this.load();
      },
      async load() {
        const id = this.jobId;
        try {
          const job = await rpc('ContainerService.Status', { job_id: id });
          if (id !== this.jobId) return; // another job's page opened meanwhile
          this.job = job;
          this.error = '';
          refreshNames();
        } catch (error) {
          this.error = describe(error);
          return;
        }
        const nodes = this.job.executions.map((e) => e.node_id);
        if (!nodes.includes(this.logNode)) {
          const self = Alpine.store('node').node_id;
          this.logNode = nodes.includes(self) ? self : nodes[0] || '';
        }
        if (this.logNode && (this.follow || this.logs === null)) this.showLogs();
      },
      execution() {
        return this.job ? this.job.executions.find((e) => e.node_id === this.logNode) : undefined;
      },
      // What the logs pane shows: a running execution followed live from GET /logs (its node's output as it is
      // written, from another node over the mesh), anything else read once with ContainerService.Logs.
      showLogs() {
        const e = this.execution();
        if (this.follow && e && e.state === 'running') this.startFollow();
        else if (!this.follower) this.loadLogs();
      },
      logsChanged() {
        this.stopFollow();
        this.showLogs();
      },
      refreshLogs() {
        this.stopFollow();
        this.loadLogs();
      },
      followChanged() {
        this.stopFollow();
        if (this.follow) this.showLogs();
      },
      async loadLogs() {
        if (!this.logNode) return;
        const id = this.jobId;
        try {
          const logs = await rpc('ContainerService.Logs', { job_id: id, node_id: this.logNode, tail: TAIL });
          if (id === this.jobId && !this.follower) this.logs = logs;
        } catch (error) {
          this.logs = { stdout: '', stderr: describe(error), attempt: '-', source: 'error' };
        }
      },
      startFollow() {
        const key = this.jobId + ' ' + this.logNode;
        if (this.follower && this.follower.key === key) return;
        this.stopFollow();
        // Compared by number: Alpine hands back a proxy of the object, not the object itself.
        const follower = { key: key, seq: ++followSeq, controller: new AbortController() };
        this.follower = follower;
        const query = new URLSearchParams({ job_id: this.jobId, node_id: this.logNode, tail: String(TAIL) });
        this.follow_(follower, '/logs?' + query.toString());
      },
      stopFollow() {
        if (this.follower) this.follower.controller.abort();
        this.follower = null;
      },
      async follow_(follower, url) {
        const current = () => this.follower !== null && this.follower.seq === follower.seq;
        const logs = { stdout: '', stderr: '', attempt: this.execution() ? this.execution().attempt : '-', source: 'live' };
        let ended = null;
        const parser = new SseParser((event) => {
          let data = {};
          try {
            data = JSON.parse(event.data);
          } catch (error) {
            return;
          }
          if (event.type === 'stdout' || event.type === 'stderr') {
            logs[event.type] = (logs[event.type] + data.text).slice(-MAX_LOG_TEXT);
          } else if (event.type === 'end' || event.type === 'cut') {
            ended = event.type === 'cut' ? 'cut: ' + data.reason : 'end';
          }
        }, null);
        try {
          const response = await openStream(url, follower.controller.signal);
          if (!response.ok || !response.body) {
            const body = await response.json().catch(() => ({}));
            throw new Error(body.error ? body.error.message : 'HTTP ' + response.status);
          }
          if (current()) this.logs = logs;
          await readStream(response, (text) => {
            parser.feed(text);
            if (current()) this.logs = Object.assign({}, logs);
          }, () => current() && ended === null);
        } catch (error) {
          if (error.name === 'AbortError' || !current()) return;
          ended = 'cut: ' + describe(error);
        }
        if (!current()) return;
        this.follower = null;
        if (ended && ended.startsWith('cut')) this.logs = Object.assign({}, logs, { source: ended });
        else this.loadLogs(); // the attempt ended: its whole tail, as the node keeps it
      },
      final() {
        return this.job !== null && FINAL.includes(this.job.status);
      },
      async stop() {
        this.stopping = true;
        try {
          const result = await rpc('ContainerService.Stop', { job_id: this.jobId });
          this.message = result.message + ': waiting for the nodes to stop it';
        } catch (error) {
          this.message = describe(error);
        }
        this.stopping = false;
      },
      // Pull progress (bytes done of total, about one event a second per node) shown while the node pulls.
      onProgress(d) {
        if (!d || d.job_id !== this.jobId || !d.node_id) return;
        const done = d.done ?? d.bytes_done ?? d.current ?? 0;
        const total = d.total ?? d.bytes_total ?? 0;
        this.progress = Object.assign({}, this.progress, { [d.node_id]: { done: done, total: total } });
      },
      pulling(e) {
        return e.state === 'pulling' && this.progress[e.node_id] !== undefined;
      },
      pullDone(e) {
        return this.progress[e.node_id] ? this.progress[e.node_id].done : 0;
      },
      pullTotal(e) {
        return this.progress[e.node_id] ? this.progress[e.node_id].total || 1 : 1;
      },
      pullText(e) {
        const p = this.progress[e.node_id];
        return p ? bytes(p.done) + (p.total ? ' of ' + bytes(p.total) : '') : '';
      },
      logsSource() {
        if (!this.logs) return '';
        const from = this.logs.source === 'live' ? 'following' : 'from ' + this.logs.source;
        return 'attempt ' + this.logs.attempt + ', ' + from;
      },
      historyOf(e) {
        return e.history || [];
      },
      historyText(h) {
        const parts = ['attempt ' + h.attempt, h.state];
        if (h.exit_code !== null && h.exit_code !== undefined) parts.push('exit ' + h.exit_code);
        if (h.error) parts.push(h.error);
        return parts.join(', ');
      },
      allocationText() {
        const a = this.job.allocation;
        const nodes = (a.nodes || []).map((n) => this.nameOf(n)).join(', ');
        return 'version ' + a.version + ': ' + a.replicas + ' replicas on ' + (nodes || 'no node') + (a.note ? ' (' + a.note + ')' : '');
      },
      specText() {
        return this.job ? JSON.stringify(this.job.spec, null, 2) : '';
      },
    }));

    Alpine.data('createView', () => ({
      f: {
        image: '', command: '', name: '', env: '', labels: '', placement: 'all', replicas: 1, nodes: '', selector: '',
        cpus: '', memory: '', ports: '', restart: '', retries: '', timeout: '',
      },
      error: '',
      busy: false,
      edited() {
        this.error = '';
      },
      spec() {
        const f = this.f;
        const spec = { image: f.image.trim(), arguments: words(f.command), env: pairs(f.env) };
        if (f.name.trim()) spec.name = f.name.trim();
        const labels = pairs(f.labels);
        if (Object.keys(labels).length) spec.labels = labels;
        const selector = pairs(f.selector);
        const withSelector = (p) => (Object.keys(selector).length ? Object.assign(p, { selector: selector }) : p);
        if (f.placement === 'replicas') spec.placement = withSelector({ replicas: Number(f.replicas) });
        else if (f.placement === 'nodes') spec.placement = withSelector({ nodes: list(f.nodes) });
        else if (Object.keys(selector).length) spec.placement = { selector: selector };
        const resources = {};
        if (String(f.cpus).trim() !== '') resources.cpus = Number(f.cpus);
        if (f.memory.trim()) resources.memory = /^[0-9]+$/.test(f.memory.trim()) ? Number(f.memory) : f.memory.trim();
        if (Object.keys(resources).length) spec.resources = resources;
        const ports = list(f.ports);
        if (ports.length) spec.ports = ports;
        if (f.restart) spec.restart = f.restart;
        if (String(f.retries).trim() !== '') spec.retries = Number(f.retries);
        if (String(f.timeout).trim() !== '') spec.timeout = Number(f.timeout);
        return spec;
      },
      preview() {
        try {
          return JSON.stringify(this.spec(), null, 2);
        } catch (error) {
          return describe(error);
        }
      },
      async submit() {
        this.error = '';
        let spec;
        try {
          spec = this.spec();
        } catch (error) {
          this.error = describe(error);
          return;
        }
        this.busy = true;
        try {
          const result = await rpc('ContainerService.Create', spec);
          location.hash = '#/job/' + result.job_id;
        } catch (error) {
          this.error = describe(error);
        }
        this.busy = false;
      },
    }));
  });

  // Who answers, then the stream; called again once a token is given.
  async function boot() {
    try {
      const info = await rpc('NodeService.Info', {});
      Object.assign(Alpine.store('node'), { node_id: info.node_id, name: info.name || info.node_id });
    } catch (error) {
      if (!Alpine.store('auth').needed) Alpine.store('route').error = describe(error);
      return;
    }
    emit({ id: null, type: 'reload', data: {} });
    feed.start();
  }
})();
