import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { endpoint, requestAPI } from './api';
import { bytes, Child, chip, el, fields, replace, stateBadge, when } from './dom';
import { Selection } from './state';
import { IDeployment, ILogTail, IVersionDetail } from './types';

const LOG_LINES = 200;

/**
 * The sidebar's "Details" section: the selected model version in full (read from the API when selected),
 * or the selected deployment with its actions (its log, its Swagger page, undeploy). Hidden when nothing
 * is selected. An answer that comes after the selection changed is dropped.
 */
export class DetailsView {
  /** The section, to be placed in the panel. */
  readonly node: HTMLElement;

  constructor(options: DetailsView.IOptions) {
    this._settings = options.serverSettings;
    this._registry = options.registry;
    this._say = options.say;
    this._refresh = options.refresh;
    this._body = el('div', { className: 'jp-mlops-details-body' });
    this.node = el(
      'section',
      { className: 'jp-mlops-section jp-mlops-details' },
      el('h3', {}, 'Details'),
      this._body
    );
    this.node.hidden = true;
  }

  /**
   * Show what is selected: nothing (the section is hidden), a deployment or a model version.
   *
   * @param deployment the selected deployment as listed; when it is not (it is no longer live), nothing new
   *   is shown.
   */
  show(selection: Selection, deployment?: IDeployment): void {
    this._token += 1;
    if (selection === null) {
      this.node.hidden = true;
      replace(this._body);
      return;
    }
    this.node.hidden = false;
    if (selection.kind === 'deployment') {
      if (deployment !== undefined) {
        this._logs = el('pre', { className: 'jp-mlops-log' });
        this._logs.hidden = true;
        this._renderDeployment(deployment);
      }
    } else {
      void this._showVersion(selection.name, selection.version);
    }
  }

  /** Show the selected deployment as listed again; its log, when shown, stays. */
  update(deployment: IDeployment): void {
    this._renderDeployment(deployment);
  }

  private _renderDeployment(d: IDeployment): void {
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
      this._body,
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
    const token = this._token;
    const logs = this._logs;
    if (logs === null) {
      return;
    }
    this._say(`Reading the log of ${name}…`);
    try {
      const tail = await requestAPI<ILogTail>(
        endpoint(`deployments/${encodeURIComponent(name)}/logs`, this._registry(), {
          tail: String(LOG_LINES)
        }),
        {},
        this._settings
      );
      if (token !== this._token) {
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
        endpoint(`deployments/${encodeURIComponent(d.name)}`, this._registry()),
        { method: 'DELETE' },
        this._settings
      );
      this._say(`Undeployed ${d.name}.`);
    } catch (error) {
      this._say(`Could not undeploy ${d.name}: ${describe(error)}`, true);
    }
    await this._refresh();
  }

  private async _showVersion(name: string, version: number): Promise<void> {
    const token = this._token;
    replace(this._body, el('div', { className: 'jp-mlops-note' }, `Loading ${name}:${version}…`));
    let detail: IVersionDetail;
    try {
      detail = await requestAPI<IVersionDetail>(
        endpoint(`models/${encodeURIComponent(name)}/versions/${version}`, this._registry()),
        {},
        this._settings
      );
    } catch (error) {
      if (token === this._token) {
        replace(
          this._body,
          el('div', { className: 'jp-mlops-error' }, `Could not read ${name}:${version}: ${describe(error)}`)
        );
      }
      return;
    }
    if (token !== this._token) {
      return;
    }
    replace(this._body, ...versionDetails(detail));
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _registry: () => string | null;
  private readonly _say: (message: string, failed?: boolean) => void;
  private readonly _refresh: () => Promise<void>;
  private readonly _body: HTMLDivElement;
  private _logs: HTMLPreElement | null = null;
  /** Counts the selections: an answer for an earlier one is dropped. */
  private _token = 0;
}

export namespace DetailsView {
  export interface IOptions {
    serverSettings: ServerConnection.ISettings;
    /** The registry shown (its folder); null: the server's default. */
    registry: () => string | null;
    /** Show a one-line status (`failed`: as an error). */
    say: (message: string, failed?: boolean) => void;
    /** Read the listings again now (after an undeploy). */
    refresh: () => Promise<void>;
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

function text(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
