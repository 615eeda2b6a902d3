import { el, focusable, replace, stateBadge } from './dom';
import { ISelectionHost, LastAnswer } from './state';
import { IDeployment } from './types';

/**
 * The sidebar's "Deployments" section: each live deployment with its state, model and target; a click
 * selects it (its details and actions are shown below). Undeployed ones are counted, not listed.
 */
export class DeploymentsSection {
  /** The section, to be placed in the panel. */
  readonly node: HTMLElement;

  constructor(private readonly _host: ISelectionHost) {
    this._list = el('ul', { className: 'jp-mlops-list jp-mlops-deployments' });
    this._note = el('div', { className: 'jp-mlops-note' });
    this.node = el(
      'section',
      { className: 'jp-mlops-section' },
      el('h3', {}, 'Deployments'),
      this._list,
      this._note
    );
  }

  /** Keep the deployments the API listed (null: none to show); false when they did not change. */
  update(deployments: IDeployment[] | null): boolean {
    return this._deployments.update(deployments);
  }

  /** The live deployment of that name, if there is one. */
  find(name: string): IDeployment | undefined {
    return this._live().find(d => d.name === name);
  }

  /** Show the live deployments kept, with the selected one highlighted. */
  render(): void {
    const deployments = this._deployments.value;
    if (deployments === null) {
      replace(this._list);
      replace(this._note);
      return;
    }
    const shown = this._live();
    const hidden = deployments.length - shown.length;
    if (shown.length === 0) {
      replace(
        this._list,
        el(
          'li',
          { className: 'jp-mlops-empty' },
          'No deployments. In a notebook: %deploy NAME:VERSION --name SERVICE'
        )
      );
    } else {
      replace(this._list, ...shown.map(d => this._item(d)));
    }
    replace(this._note, hidden > 0 ? `${hidden} undeployed, not shown` : null);
  }

  /** Deployments that were not undeployed (the registry keeps undeployed ones as "deleted"). */
  private _live(): IDeployment[] {
    return (this._deployments.value ?? []).filter(d => d.state !== 'deleted');
  }

  private _item(d: IDeployment): HTMLLIElement {
    const selection = this._host.selection();
    const selected = selection?.kind === 'deployment' && selection.name === d.name;
    const item = el(
      'li',
      {
        className: `jp-mlops-row jp-mlops-deployment${selected ? ' jp-mod-selected' : ''}`,
        data: { deployment: d.name, state: d.state },
        aria: { selected: String(selected) },
        onClick: () => this._host.select({ kind: 'deployment', name: d.name })
      },
      stateBadge(d.state),
      el('span', { className: 'jp-mlops-name' }, d.name),
      el('span', { className: 'jp-mlops-sub' }, `${d.model} · ${d.target}`)
    );
    focusable(item);
    return item;
  }

  private readonly _list: HTMLUListElement;
  private readonly _note: HTMLDivElement;
  private readonly _deployments = new LastAnswer<IDeployment[]>();
}
