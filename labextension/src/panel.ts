import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { IPoll, Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { ApiError, ExtensionMissingError, requestAPI } from './api';
import { append, bytes, Child, el, fields, replace, when } from './dom';
import { IDeployment, ILogTail, IModelSummary, IVersionDetail, IVersionSummary } from './types';

/** Polling: every 5 s while all is well; after a failure 3x longer each time, up to a minute. */
const POLL_INTERVAL = 5000;
const POLL_MAX = 60000;
const LOG_LINES = 200;

type Selection =
  { kind: 'version'; name: string; version: number } | { kind: 'deployment'; name: string } | null;

/**
 * The "MLOps" sidebar: the registry's models (versions, aliases) and the deployments with their live
 * state, details of the selected one, and actions (logs, undeploy). Everything goes through the server
 * extension's REST API (`requestAPI`); the panel polls it while shown, backing off after failures.
 */
export class MlopsPanel extends Widget {
  constructor(options: MlopsPanel.IOptions = {}) {
    super();
    this.id = 'mlops-magics-sidebar';
    this.addClass('jp-mlops-panel');
    this.title.caption = 'MLOps: models and deployments';
    if (options.icon) {
      this.title.icon = options.icon;
    } else {
      this.title.label = 'MLOps';
    }
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();

    const refresh = el(
      'button',
      {
        className: 'jp-mlops-button jp-mlops-refresh',
        title: 'Refresh now',
        onClick: () => void this._poll.refresh()
      },
      '⟳'
    );
    this._updated = el('span', { className: 'jp-mlops-updated', role: 'status' });
    this._status = el('div', { className: 'jp-mlops-status', role: 'status' });
    this._notice = el('div', { className: 'jp-mlops-notice', role: 'alert' });
    this._notice.hidden = true;
    this._models = el('ul', { className: 'jp-mlops-list jp-mlops-models' });
    this._deployments = el('ul', { className: 'jp-mlops-list jp-mlops-deployments' });
    this._deploymentsNote = el('div', { className: 'jp-mlops-note' });
    this._detailsBody = el('div', { className: 'jp-mlops-details-body' });
    this._details = el(
      'section',
      { className: 'jp-mlops-section jp-mlops-details' },
      el('h3', {}, 'Details'),
      this._detailsBody
    );
    this._details.hidden = true;

    append(
      this.node,
      el(
        'header',
        { className: 'jp-mlops-header' },
        el('span', { className: 'jp-mlops-title' }, 'MLOps'),
        this._updated,
        refresh
      ),
      this._notice,
      this._status,
      el('section', { className: 'jp-mlops-section' }, el('h3', {}, 'Models'), this._models),
      el(
        'section',
        { className: 'jp-mlops-section' },
        el('h3', {}, 'Deployments'),
        this._deployments,
        this._deploymentsNote
      ),
      this._details
    );

    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: { interval: options.interval ?? POLL_INTERVAL, backoff: true, max: POLL_MAX },
      name: 'mlops-magics:sidebar',
      standby: 'when-hidden'
    });
    this._poll.ticked.connect(this._onTick, this);
  }

  /** Read the models and deployments once and show them. Rejects (after showing why) when that fails. */
  async refresh(): Promise<void> {
    try {
      const [models, deployments] = await Promise.all([
        requestAPI<IModelSummary[]>('models', {}, this._settings),
        requestAPI<IDeployment[]>('deployments', {}, this._settings)
      ]);
      this._notice.hidden = true;
      this._setModels(models);
      this._setDeployments(deployments);
      this._updated.textContent = `updated ${clock()}`;
      this._updated.classList.remove('jp-mlops-stale');
    } catch (error) {
      this._showProblem(error);
      throw error;
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    super.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      void this._poll.start();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this._poll.start();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    void this._poll.stop();
  }

  // -- what the server said -------------------------------------------------------------------

  private _onTick(_: IPoll<void, unknown, string>, state: IPoll.State<void, unknown, string>): void {
    if (state.phase === 'rejected') {
      const seconds = Math.round(state.interval / 1000);
      this._updated.textContent = `retrying in ${seconds} s`;
      this._updated.classList.add('jp-mlops-stale');
    }
  }

  private _showProblem(error: unknown): void {
    this._notice.hidden = false;
    if (error instanceof ExtensionMissingError) {
      this._notice.className = 'jp-mlops-notice jp-mlops-notice-missing';
      replace(this._notice, el('strong', {}, 'MLOps API not found. '), error.message);
      this._setModels(null);
      this._setDeployments(null);
      return;
    }
    this._notice.className = 'jp-mlops-notice';
    if (error instanceof ApiError) {
      replace(this._notice, `The MLOps API answered ${error.status} (${error.reason}): ${error.message}`);
    } else if (error instanceof ServerConnection.NetworkError) {
      replace(this._notice, `Cannot reach the Jupyter server: ${error.message}. Is it still running?`);
    } else {
      replace(this._notice, `Could not read the registry: ${String(error)}`);
    }
  }

  private _say(message: string, failed = false): void {
    this._status.textContent = message;
    this._status.classList.toggle('jp-mlops-error', failed);
  }

  // -- models ---------------------------------------------------------------------------------

  private _setModels(models: IModelSummary[] | null): void {
    if (models !== null && models === this._modelData) {
      return; // the server said nothing changed (304): the same answer as last time
    }
    const text = JSON.stringify(models);
    if (text === this._modelsText) {
      return;
    }
    this._modelsText = text;
    this._modelData = models;
    const selection = this._selection;
    if (
      selection?.kind === 'version' &&
      !models?.some(m => m.name === selection.name && m.versions.some(v => v.version === selection.version))
    ) {
      this._select(null);
    }
    this._renderModels();
  }

  private _renderModels(): void {
    const models = this._modelData;
    if (models === null) {
      replace(this._models);
      return;
    }
    if (models.length === 0) {
      replace(
        this._models,
        el(
          'li',
          { className: 'jp-mlops-empty' },
          'No models registered yet. In a notebook: %register VARIABLE --name NAME'
        )
      );
      return;
    }
    replace(this._models, ...models.map(model => this._modelItem(model)));
  }

  private _modelItem(model: IModelSummary): HTMLLIElement {
    const expanded = this._expanded.has(model.name);
    const count = model.versions.length;
    const head = el(
      'div',
      {
        className: 'jp-mlops-row jp-mlops-model-row',
        role: 'button',
        aria: { expanded: String(expanded) },
        title: expanded ? 'Hide the versions' : 'Show the versions',
        onClick: () => this._toggle(model.name)
      },
      el('span', { className: 'jp-mlops-caret' }, expanded ? '▾' : '▸'),
      el('span', { className: 'jp-mlops-name' }, model.name),
      ...Object.entries(model.aliases)
        .sort()
        .map(([alias, version]) => chip(`${alias}→v${version}`, `${alias} points to version ${version}`)),
      el('span', { className: 'jp-mlops-sub' }, `${count} version${count === 1 ? '' : 's'}`)
    );
    focusable(head);
    const item = el('li', { className: 'jp-mlops-model', data: { model: model.name } }, head);
    if (expanded) {
      item.appendChild(
        el(
          'ul',
          { className: 'jp-mlops-versions' },
          ...model.versions.map(v => this._versionItem(model.name, v))
        )
      );
    }
    return item;
  }

  private _versionItem(name: string, version: IVersionSummary): HTMLLIElement {
    const selection = this._selection;
    const selected =
      selection?.kind === 'version' && selection.name === name && selection.version === version.version;
    const item = el(
      'li',
      {
        className: `jp-mlops-row jp-mlops-version${selected ? ' jp-mod-selected' : ''}`,
        data: { version: `${name}:${version.version}` },
        aria: { selected: String(selected) },
        onClick: () => this._select({ kind: 'version', name, version: version.version })
      },
      el('span', { className: 'jp-mlops-name' }, `v${version.version}`),
      ...version.aliases.map(alias => chip(alias)),
      el('span', { className: 'jp-mlops-sub' }, `${version.flavor} · ${when(version.created_at)}`)
    );
    focusable(item);
    return item;
  }

  private _toggle(name: string): void {
    if (!this._expanded.delete(name)) {
      this._expanded.add(name);
    }
    this._renderModels();
  }

  // -- deployments ----------------------------------------------------------------------------

  private _setDeployments(deployments: IDeployment[] | null): void {
    if (deployments !== null && deployments === this._deploymentData) {
      return;
    }
    const text = JSON.stringify(deployments);
    if (text === this._deploymentsText) {
      return;
    }
    this._deploymentsText = text;
    this._deploymentData = deployments;
    const selection = this._selection;
    if (selection?.kind === 'deployment') {
      const current = this._liveDeployments().find(d => d.name === selection.name);
      if (current === undefined) {
        this._select(null);
      } else {
        this._renderDeploymentDetails(current);
      }
    }
    this._renderDeployments();
  }

  /** Deployments that were not undeployed (the registry keeps undeployed ones as "deleted"). */
  private _liveDeployments(): IDeployment[] {
    return (this._deploymentData ?? []).filter(d => d.state !== 'deleted');
  }

  private _renderDeployments(): void {
    if (this._deploymentData === null) {
      replace(this._deployments);
      replace(this._deploymentsNote);
      return;
    }
    const shown = this._liveDeployments();
    const hidden = this._deploymentData.length - shown.length;
    if (shown.length === 0) {
      replace(
        this._deployments,
        el(
          'li',
          { className: 'jp-mlops-empty' },
          'No deployments. In a notebook: %deploy NAME:VERSION --name SERVICE'
        )
      );
    } else {
      replace(this._deployments, ...shown.map(d => this._deploymentItem(d)));
    }
    replace(this._deploymentsNote, hidden > 0 ? `${hidden} undeployed, not shown` : null);
  }

  private _deploymentItem(d: IDeployment): HTMLLIElement {
    const selection = this._selection;
    const selected = selection?.kind === 'deployment' && selection.name === d.name;
    const item = el(
      'li',
      {
        className: `jp-mlops-row jp-mlops-deployment${selected ? ' jp-mod-selected' : ''}`,
        data: { deployment: d.name, state: d.state },
        aria: { selected: String(selected) },
        onClick: () => this._select({ kind: 'deployment', name: d.name })
      },
      stateBadge(d.state),
      el('span', { className: 'jp-mlops-name' }, d.name),
      el('span', { className: 'jp-mlops-sub' }, `${d.model} · ${d.target}`)
    );
    focusable(item);
    return item;
  }

  // -- details and actions --------------------------------------------------------------------

  private _select(selection: Selection): void {
    this._selection = selection;
    this._detailsToken += 1;
    this._renderModels();
    this._renderDeployments();
    if (selection === null) {
      this._details.hidden = true;
      replace(this._detailsBody);
      return;
    }
    this._details.hidden = false;
    if (selection.kind === 'deployment') {
      const d = this._liveDeployments().find(item => item.name === selection.name);
      if (d !== undefined) {
        this._logs = el('pre', { className: 'jp-mlops-log' });
        this._logs.hidden = true;
        this._renderDeploymentDetails(d);
      }
    } else {
      void this._showVersion(selection.name, selection.version);
    }
  }

  private _renderDeploymentDetails(d: IDeployment): void {
    const actions = el(
      'div',
      { className: 'jp-mlops-actions' },
      el(
        'button',
        {
          className: 'jp-mlops-button',
          title: `The last ${LOG_LINES} lines of its log`,
          onClick: () => void this._showLogs(d.name)
        },
        'Logs'
      ),
      d.swagger_url
        ? el(
            'a',
            {
              className: 'jp-mlops-button',
              href: d.swagger_url,
              target: '_blank',
              title: 'Its OpenAPI document'
            },
            'Swagger'
          )
        : null,
      el(
        'button',
        {
          className: 'jp-mlops-button jp-mlops-danger jp-mlops-undeploy',
          title: 'Stop and remove it',
          onClick: () => void this._undeploy(d)
        },
        'Undeploy'
      )
    );
    replace(
      this._detailsBody,
      el('div', { className: 'jp-mlops-details-title' }, d.name),
      fields([
        ['State', stateBadge(d.state)],
        ['Model', d.model],
        ['Target', d.target],
        ['URL', d.url ? el('a', { href: d.url, target: '_blank' }, d.url) : 'none'],
        ['Auth', d.auth ? 'key' : 'none'],
        ['Collecting', d.collect ? 'yes' : 'no'],
        ['Created', when(d.created_at)],
        ['Updated', when(d.updated_at)]
      ]),
      actions,
      this._logs
    );
  }

  private async _showLogs(name: string): Promise<void> {
    const token = this._detailsToken;
    const logs = this._logs;
    if (logs === null) {
      return;
    }
    this._say(`Reading the log of ${name}…`);
    try {
      const tail = await requestAPI<ILogTail>(
        `deployments/${encodeURIComponent(name)}/logs?tail=${LOG_LINES}`,
        {},
        this._settings
      );
      if (token !== this._detailsToken) {
        return;
      }
      logs.hidden = false;
      logs.textContent = tail.log.length > 0 ? tail.log : '(the log is empty)';
      logs.scrollTop = logs.scrollHeight;
      this._say(`The last ${LOG_LINES} lines of ${name}'s log.`);
    } catch (error) {
      this._say(`Could not read the log of ${name}: ${describe(error)}`, true);
    }
  }

  private async _undeploy(d: IDeployment): Promise<void> {
    const answer = await showDialog({
      title: `Undeploy ${d.name}?`,
      body: `This stops ${d.name} (${d.model} on ${d.target}) and removes it.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Undeploy' })]
    });
    if (!answer.button.accept) {
      return;
    }
    this._say(`Undeploying ${d.name}…`);
    try {
      await requestAPI<IDeployment>(
        `deployments/${encodeURIComponent(d.name)}`,
        { method: 'DELETE' },
        this._settings
      );
      this._say(`Undeployed ${d.name}.`);
    } catch (error) {
      this._say(`Could not undeploy ${d.name}: ${describe(error)}`, true);
    }
    await this._poll.refresh();
  }

  private async _showVersion(name: string, version: number): Promise<void> {
    const token = this._detailsToken;
    replace(this._detailsBody, el('div', { className: 'jp-mlops-note' }, `Loading ${name}:${version}…`));
    let detail: IVersionDetail;
    try {
      detail = await requestAPI<IVersionDetail>(
        `models/${encodeURIComponent(name)}/versions/${version}`,
        {},
        this._settings
      );
    } catch (error) {
      if (token === this._detailsToken) {
        replace(
          this._detailsBody,
          el('div', { className: 'jp-mlops-error' }, `Could not read ${name}:${version}: ${describe(error)}`)
        );
      }
      return;
    }
    if (token !== this._detailsToken) {
      return;
    }
    replace(this._detailsBody, ...versionDetails(detail));
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _poll: Poll<void, unknown, string>;
  private readonly _updated: HTMLSpanElement;
  private readonly _status: HTMLDivElement;
  private readonly _notice: HTMLDivElement;
  private readonly _models: HTMLUListElement;
  private readonly _deployments: HTMLUListElement;
  private readonly _deploymentsNote: HTMLDivElement;
  private readonly _details: HTMLElement;
  private readonly _detailsBody: HTMLDivElement;
  private readonly _expanded = new Set<string>();
  private _logs: HTMLPreElement | null = null;
  private _modelData: IModelSummary[] | null = null;
  private _deploymentData: IDeployment[] | null = null;
  private _modelsText = '';
  private _deploymentsText = '';
  private _selection: Selection = null;
  private _detailsToken = 0;
}

export namespace MlopsPanel {
  export interface IOptions {
    icon?: LabIcon;
    serverSettings?: ServerConnection.ISettings;
    /** Milliseconds between polls while all is well (default 5000). */
    interval?: number;
  }
}

/** One version in full: its card, its aliases' history and its reports' summaries. */
function versionDetails(v: IVersionDetail): Child[] {
  const parts: Child[] = [
    el(
      'div',
      { className: 'jp-mlops-details-title' },
      `${v.name}:${v.version}`,
      ...v.aliases.map(a => chip(a))
    ),
    fields([
      ['Flavor', `${v.flavor} (${v.framework} ${v.framework_version})`],
      ['Created', `${when(v.created_at)} by ${v.created_by}`],
      ['Description', v.description ?? ''],
      ['Size', `${bytes(v.size)} in ${v.files.length} file${v.files.length === 1 ? '' : 's'}`],
      ['SHA-256', el('code', { title: v.sha256 }, v.sha256.slice(0, 16) + '…')],
      [
        'Tags',
        Object.keys(v.tags).length > 0
          ? el('span', {}, ...Object.entries(v.tags).map(([k, t]) => chip(`${k}=${t}`)))
          : ''
      ],
      ...Object.entries(v.lineage).map(([key, value]): [string, Child] => [
        key.replace(/_/g, ' '),
        text(value)
      ])
    ])
  ];
  if (v.signature !== null) {
    parts.push(
      el('h4', {}, 'Signature'),
      el('pre', { className: 'jp-mlops-code' }, JSON.stringify(v.signature, null, 1))
    );
  }
  const reports = Object.entries(v.report_summaries);
  if (reports.length > 0) {
    parts.push(
      el('h4', {}, 'Reports'),
      fields(reports.map(([kind, summary]): [string, Child] => [kind, summary]))
    );
  }
  if (v.alias_history.length > 0) {
    const rows = [...v.alias_history].reverse().slice(0, 10);
    parts.push(
      el('h4', {}, 'Alias history'),
      el(
        'table',
        { className: 'jp-mlops-history' },
        el(
          'tr',
          {},
          el('th', {}, 'when'),
          el('th', {}, 'alias'),
          el('th', {}, 'version'),
          el('th', {}, 'by')
        ),
        ...rows.map(e =>
          el(
            'tr',
            {},
            el('td', {}, when(e.at)),
            el('td', {}, e.alias),
            el('td', {}, e.version === null ? 'removed' : `v${e.version}`),
            el('td', {}, e.by)
          )
        )
      )
    );
  }
  return parts;
}

function chip(label: string, title?: string): HTMLSpanElement {
  return el('span', { className: 'jp-mlops-chip', title: title ?? label }, label);
}

function stateBadge(state: string): HTMLSpanElement {
  return el('span', { className: `jp-mlops-state jp-mlops-state-${state.replace(/[^a-z]/g, '')}` }, state);
}

function focusable(node: HTMLElement): void {
  node.tabIndex = 0;
  node.addEventListener('keydown', event => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      node.click();
    }
  });
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function clock(): string {
  return new Date().toLocaleTimeString();
}
