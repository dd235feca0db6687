"""The ground truth's programs are configured like the others: each setting a flag and a
variable, checked when read, and in the README's configuration tables."""

from __future__ import annotations

import pytest

from detector.settings.detector import DetectorSettings
from detector.settings.fields import ConfigError, markdown_table
from detector.settings.labels import (
    LABEL_PROGRAMS,
    BacktestSettings,
    HistorySettings,
    LabelTopicSettings,
    ScoreSettings,
    label_tables,
)
from tests.support import ROOT


def test_readme_documents_every_setting_of_the_label_programs():
    readme = (ROOT / "README.md").read_text()
    tables = label_tables(markdown_table(DetectorSettings, "DETECTOR"))
    assert tables in readme, "paste the output of `python -m detector config`"
    detector = markdown_table(DetectorSettings, "DETECTOR")
    for _, cls in LABEL_PROGRAMS:
        for row in markdown_table(cls, "DETECTOR").splitlines()[2:]:
            assert row in tables or row in detector, row


@pytest.mark.parametrize(("make", "says"), [
    (lambda: LabelTopicSettings(labels_topic=" "), "--labels-topic is empty"),
    (lambda: LabelTopicSettings(labels_retention="0"), "--labels-retention must be positive"),
    (lambda: ScoreSettings(window_flags=0), "--window-flags must be positive"),
    (lambda: ScoreSettings(output_topic="detector-labels"), "must differ"),
    (lambda: HistorySettings(input_topic="x", labels_topic="x"), "must differ"),
    (lambda: BacktestSettings(models_topic="values"), "must differ"),
])
def test_settings_that_cannot_work_are_refused(make, says):
    with pytest.raises(ConfigError, match=says):
        make()
    assert LabelTopicSettings(labels_retention="7d").retention_ms == 7 * 86_400_000
