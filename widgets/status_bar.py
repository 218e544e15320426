"""The status bar's permanent indicators: level count, parameter count, zoom, and the graph's
problems (a button whose menu lists them; choosing one selects what it is about)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLabel, QMenu, QToolButton

if TYPE_CHECKING:
    from nlstudio.widgets.document import FaultView
    from nlstudio.widgets.main_window import MainWindow


class StatusIndicators(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.setObjectName("statusIndicators")
        self.window = window
        status = window.statusBar()
        status.setObjectName("statusBar")
        self.faults = QToolButton(window)
        self.faults.setObjectName("faultIndicator")
        self.faults.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.fault_menu = QMenu(self.faults)
        self.fault_menu.setObjectName("faultMenu")
        self.faults.setMenu(self.fault_menu)
        self.levels = self._label("levelCountLabel")
        self.parameters = self._label("parameterCountLabel")
        self.zoom = self._label("zoomLabel")
        for widget in (self.levels, self.parameters, self.zoom, self.faults):
            status.addPermanentWidget(widget)
        status.showMessage("Ready", 3000)
        document = window.document
        document.changed.connect(self.show_levels)
        document.faultsChanged.connect(self.show_faults)
        window.view.transformChanged.connect(self.show_zoom)
        window.parameters.counted.connect(self.show_parameters)
        self.show_levels()
        self.show_faults()
        self.show_parameters(window.parameters.text, window.parameters.tip)

    def _label(self, name: str) -> QLabel:
        label = QLabel()
        label.setObjectName(name)
        return label

    def show_levels(self) -> None:
        n = len(self.window.document.levels())
        self.levels.setText(f"{n} level" + ("" if n == 1 else "s"))

    def show_parameters(self, text: str, tip: str) -> None:
        self.parameters.setText(f"{text} parameters")
        self.parameters.setToolTip(tip)

    def show_zoom(self) -> None:
        self.zoom.setText(f"{round(self.window.view.zoom() * 100)} %")

    def show_faults(self, _faults: object = None) -> None:
        faults = self.window.document.faults
        button = self.faults
        self.fault_menu.clear()
        if faults:
            button.setText(f"⚠ {len(faults)} problem" + ("s" if len(faults) > 1 else ""))
            for fault in faults:
                action = self.fault_menu.addAction(fault.text)
                action.triggered.connect(lambda _c=False, f=fault: self.go_to(f))
            button.setToolTip("The model cannot be trained yet:\n" + "\n".join(
                "• " + f.text for f in faults))
        else:
            button.setText("✓ Ready to train")
            button.setToolTip("The graph is valid: every level lies on a path from input to "
                              "output")
            self.fault_menu.addAction("No problems").setEnabled(False)
        button.setProperty("faults", bool(faults))
        button.style().unpolish(button)
        button.style().polish(button)

    def go_to(self, fault: "FaultView") -> None:
        """Select what ``fault`` is about (a level, an edge, or nothing) and say it."""
        scene, view = self.window.scene, self.window.view
        if fault.level_id and fault.level_id in scene.nodes:
            scene.select_only([fault.level_id])
            view.centerOn(scene.nodes[fault.level_id])
        elif fault.edge_index is not None:
            scene.clearSelection()
            for item in scene.edges.values():
                if item.index == fault.edge_index:
                    item.setSelected(True)
        else:
            scene.clearSelection()
        self.window.show_status(fault.text, 8000)
