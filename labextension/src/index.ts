import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { MlopsPanel } from './panel';

export { requestAPI, ApiError, ExtensionMissingError } from './api';
export { MlopsPanel } from './panel';

/** A model box with a rising line: the sidebar's tab. */
const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 2 3 6.5v11L12 22l9-4.5v-11L12 2zm0 2.2 6.6 3.3L12 10.8 5.4 7.5 12 4.2zM5 9.1l6 3v7.3l-6-3V9.1zm8 10.3v-7.3l6-3v7.3l-6 3z"/>
  </g>
</svg>`;

const mlopsIcon = new LabIcon({ name: 'mlops-magics:icon', svgstr: ICON_SVG });

const COMMAND = 'mlops-magics:open-sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mlops-magics:sidebar',
  description: 'The MLOps sidebar: the mlops-magics registry and deployments.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    shell: ILabShell | null
  ) => {
    const panel = new MlopsPanel({
      icon: mlopsIcon,
      serverSettings: app.serviceManager.serverSettings,
      shell
    });
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, panel.id);
    app.commands.addCommand(COMMAND, {
      label: 'MLOps: Show Models and Deployments',
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: COMMAND, category: 'MLOps' });
  }
};

export default plugin;
