import { ILabShell } from '@jupyterlab/application';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { IPoll, Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { ApiError, endpoint, ExtensionMissingError, requestAPI } from './api';
import { DeploymentsSection } from './deployments';
import { DetailsView } from './details';
import { append, el, replace } from './dom';
import { ModelsSection } from './models';
import { chooseRegistry, IShownRegistry, KernelFollower, RegistryBar } from './registry';
import { Selection } from './state';
import { IDeployment, IModelSummary, IRegistries } from './types';

/** Polling: every 5 s while all is well; after a failure 3x longer each time, up to a minute. */
const POLL_INTERVAL = 5000;
const POLL_MAX = 60000;

/**
 * The "MLOps" sidebar: a registry's models (versions, aliases) and the deployments with their live
 * state, details of the selected one, and actions (logs, undeploy). Everything goes through the server
 * extension's REST API (`requestAPI`); the panel polls it while shown, backing off after failures.
 *
 * Which registry: the one the active notebook's kernel uses (the server's index of registries in use says
 * which), another one in use chosen in the selector, or the server's default, always named and said why
 * (`RegistryBar`). When the followed kernel's registry changes, the panel switches and says so.
 *
 * The panel holds the header, the notices, the polling, the registry shown and the one selection; the
 * sections (`ModelsSection`, `DeploymentsSection`, `DetailsView`) render what they are given.
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
    this._bar = new RegistryBar(home => this._choose(home));
    this._kernel = new KernelFollower(options.shell ?? null, () => this._kernelChanged());

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
    const host = { selection: () => this._selection, select: (s: Selection) => this._select(s) };
    this._models = new ModelsSection(host);
    this._deployments = new DeploymentsSection(host);
    this._details = new DetailsView({
      serverSettings: this._settings,
      registry: () => this._shown?.home ?? null,
      say: (message, failed) => this._say(message, failed),
      refresh: () => this._poll.refresh()
    });

    append(
      this.node,
      el(
        'header',
        { className: 'jp-mlops-header' },
        el('span', { className: 'jp-mlops-title' }, 'MLOps'),
        this._updated,
        refresh
      ),
      this._bar.node,
      this._notice,
      this._status,
      this._models.node,
      this._deployments.node,
      this._details.node
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

  /**
   * Read the registries in use, then the models and deployments of the one to show, and show them. Rejects
   * (after showing why) when that fails. An answer for a registry no longer shown is dropped.
   */
  async refresh(): Promise<void> {
    const generation = ++this._generation;
    try {
      const registries = await requestAPI<IRegistries>('registries', {}, this._settings);
      if (generation !== this._generation) {
        return;
      }
      const kernel = this._kernel.active;
      const shown = chooseRegistry(registries, kernel, this._chosen);
      this._show(shown);
      this._bar.render(registries, shown, kernel);
      const [models, deployments] = await Promise.all([
        requestAPI<IModelSummary[]>(endpoint('models', shown.home), {}, this._settings),
        requestAPI<IDeployment[]>(endpoint('deployments', shown.home), {}, this._settings)
      ]);
      if (generation !== this._generation) {
        return;
      }
      this._notice.hidden = true;
      this._setModels(models);
      this._setDeployments(deployments);
      this._updated.textContent = `updated ${clock()}`;
      this._updated.classList.remove('jp-mlops-stale');
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      if (this._chosen !== null && error instanceof ApiError && error.reason === 'NotFoundError') {
        // the registry chosen is gone (its folder was removed): follow the notebook again, saying so
        this._say(`The registry chosen is no longer there: ${error.message}`, true);
        this._chosen = null;
      }
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

  // -- the registry shown ---------------------------------------------------------------------

  /** The followed notebook, its session or its kernel changed: read again now (when shown). */
  private _kernelChanged(): void {
    if (this._poll !== undefined && this.isVisible) {
      void this._poll.refresh();
    }
  }

  /** Show another registry from now on (null: the followed kernel's), read at once. */
  private _choose(home: string | null): void {
    this._chosen = home;
    void this._poll.refresh();
  }

  /** Make `shown` the registry shown; when it is another one, start afresh and say why it changed. */
  private _show(shown: IShownRegistry): void {
    const before = this._shown;
    this._shown = shown;
    if (before === null || before.home === shown.home) {
      return;
    }
    this._select(null);
    this._setModels(null);
    this._setDeployments(null);
    this._say(`Now showing ${shown.label}: ${shown.why}.`);
  }

  // -- the listings and the one selection -----------------------------------------------------

  /** Show the models listed; a selected version that is gone is unselected. */
  private _setModels(models: IModelSummary[] | null): void {
    if (!this._models.update(models)) {
      return;
    }
    const selection = this._selection;
    if (selection?.kind === 'version' && !this._models.has(selection.name, selection.version)) {
      this._select(null);
    }
    this._models.render();
  }

  /** Show the deployments listed; a selected deployment that is gone is unselected, else shown anew. */
  private _setDeployments(deployments: IDeployment[] | null): void {
    if (!this._deployments.update(deployments)) {
      return;
    }
    const selection = this._selection;
    if (selection?.kind === 'deployment') {
      const current = this._deployments.find(selection.name);
      if (current === undefined) {
        this._select(null);
      } else {
        this._details.update(current);
      }
    }
    this._deployments.render();
  }

  private _select(selection: Selection): void {
    this._selection = selection;
    this._models.render();
    this._deployments.render();
    const deployment = selection?.kind === 'deployment' ? this._deployments.find(selection.name) : undefined;
    this._details.show(selection, deployment);
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _bar: RegistryBar;
  private readonly _kernel: KernelFollower;
  /** The registry chosen in the selector; null: follow the notebook's kernel. */
  private _chosen: string | null = null;
  private _shown: IShownRegistry | null = null;
  /** Counts the refreshes: an answer for an earlier one is dropped. */
  private _generation = 0;
  private readonly _poll: Poll<void, unknown, string>;
  private readonly _updated: HTMLSpanElement;
  private readonly _status: HTMLDivElement;
  private readonly _notice: HTMLDivElement;
  private readonly _models: ModelsSection;
  private readonly _deployments: DeploymentsSection;
  private readonly _details: DetailsView;
  private _selection: Selection = null;
}

export namespace MlopsPanel {
  export interface IOptions {
    icon?: LabIcon;
    serverSettings?: ServerConnection.ISettings;
    /** JupyterLab's shell: the panel follows the kernel of its current notebook. */
    shell?: ILabShell | null;
    /** Milliseconds between polls while all is well (default 5000). */
    interval?: number;
  }
}

function clock(): string {
  return new Date().toLocaleTimeString();
}
