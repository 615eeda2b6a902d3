import { chip, el, focusable, replace, when } from './dom';
import { ISelectionHost, LastAnswer } from './state';
import { IModelSummary, IVersionSummary } from './types';

/**
 * The sidebar's "Models" section: each registered model with its aliases and number of versions; a click
 * shows or hides its versions, and a click on a version selects it (its details are shown below).
 */
export class ModelsSection {
  /** The section, to be placed in the panel. */
  readonly node: HTMLElement;

  constructor(private readonly _host: ISelectionHost) {
    this._list = el('ul', { className: 'jp-mlops-list jp-mlops-models' });
    this.node = el('section', { className: 'jp-mlops-section' }, el('h3', {}, 'Models'), this._list);
  }

  /** Keep the models the API listed (null: none to show); false when they did not change. */
  update(models: IModelSummary[] | null): boolean {
    return this._models.update(models);
  }

  /** Whether that version is among the models kept. */
  has(name: string, version: number): boolean {
    return (
      this._models.value?.some(m => m.name === name && m.versions.some(v => v.version === version)) ?? false
    );
  }

  /** Show the models kept, with the selected version highlighted. */
  render(): void {
    const models = this._models.value;
    if (models === null) {
      replace(this._list);
      return;
    }
    if (models.length === 0) {
      replace(
        this._list,
        el(
          'li',
          { className: 'jp-mlops-empty' },
          'No models registered yet. In a notebook: %register VARIABLE --name NAME'
        )
      );
      return;
    }
    replace(this._list, ...models.map(model => this._modelItem(model)));
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
    const selection = this._host.selection();
    const selected =
      selection?.kind === 'version' && selection.name === name && selection.version === version.version;
    const item = el(
      'li',
      {
        className: `jp-mlops-row jp-mlops-version${selected ? ' jp-mod-selected' : ''}`,
        data: { version: `${name}:${version.version}` },
        aria: { selected: String(selected) },
        onClick: () => this._host.select({ kind: 'version', name, version: version.version })
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
    this.render();
  }

  private readonly _list: HTMLUListElement;
  private readonly _models = new LastAnswer<IModelSummary[]>();
  private readonly _expanded = new Set<string>();
}
