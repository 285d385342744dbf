"""Named tasks (shared/contracts/tasks.py): files read and checked at start, a job's options over its task's,
a task expanded only at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.contracts.errors import ConfigError, InputError
from shared.contracts.inputs import parse_job_document, parse_job_text
from shared.contracts.tasks import load_tasks, with_task

ROOT = Path(__file__).resolve().parents[2]
RECORD = {"custom_id": "a1", "fields": {"curso": "4t ESO", "consigna": "Què és la fotosíntesi?",
                                         "respuesta": "Les plantes fan menjar amb la llum."}}


def test_the_shipped_grading_task_reads_and_renders_its_records():
    tasks = load_tasks(ROOT / "tasks")
    grade = tasks["grade-ca"]
    assert grade.fields() == ["consigna", "curso", "respuesta"]
    assert grade.options["sampling"] == {"temperature": 0.1, "top_p": 0.95, "max_tokens": 200}
    job = parse_job_document({"task": "grade-ca", "items": [RECORD]}, tasks=tasks, any_model=True)
    assert job.task == "grade-ca" and job.system.startswith("Ets un professor")
    assert job.response_format.json_schema.schema_["required"] == ["nota", "feedback"]
    _, requests = job.prepared
    user = requests["a1"].messages[-1]["content"]
    assert "Curs: 4t ESO" in user and "Les plantes fan menjar amb la llum." in user


def test_a_jobs_own_options_win_and_sampling_and_metadata_merge_key_by_key():
    tasks = load_tasks(ROOT / "tasks")
    opts = with_task({"task": "grade-ca", "sampling": {"max_tokens": 50}, "metadata": {"course": "4t"},
                      "system": "Sigues breu."}, tasks)
    assert opts["sampling"] == {"temperature": 0.1, "top_p": 0.95, "max_tokens": 50}
    assert opts["metadata"] == {"task_family": "grading", "language": "ca", "course": "4t"}
    assert opts["system"] == "Sigues breu." and opts["template"].startswith("Curs:")


def test_an_unknown_task_is_refused_naming_the_field_and_the_known_ones():
    tasks = load_tasks(ROOT / "tasks")
    with pytest.raises(InputError) as e:
        parse_job_document({"task": "grade-xx", "items": [RECORD]}, tasks=tasks)
    assert e.value.issues[0].field == "task" and "grade-ca" in e.value.issues[0].message
    # JSONL lines with the task as an option (the API's ?task=)
    job = parse_job_text('{"custom_id": "b", "fields": {"curso": "1r", "consigna": "c", "respuesta": "r"}}\n',
                         options={"id": "j", "task": "grade-ca"}, tasks=tasks, any_model=True)
    assert job.template.startswith("Curs:")


def test_a_worker_reads_an_expanded_job_and_keeps_the_task_as_a_label():
    tasks = load_tasks(ROOT / "tasks")
    job = parse_job_document({"task": "grade-ca", "items": [RECORD]}, tasks=tasks, any_model=True)
    again = parse_job_document(job.wire(), any_model=True)  # no tasks here: nothing to look up
    assert again.task == "grade-ca" and again.template == job.template and again.sampling == job.sampling


@pytest.mark.parametrize(("text", "where"), [
    ("id: t\ntemplate: '{{ a '\n", "template"),
    ("id: t\nsampling: {temperature: 9}\n", "sampling.temperature"),
    ("id: t\npriority: high\n", "priority"),
    ("id: t\nnot_an_option: 1\n", "not_an_option"),
    ("- a list\n", "a task is a mapping"),
    ("id: t\ntemplate: [unclosed\n", "while parsing"),
])
def test_a_bad_task_file_stops_the_start_naming_the_file_and_the_field(tmp_path, text, where):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_tasks(tmp_path)
    assert "bad.yaml" in str(e.value) and where in str(e.value)


def test_two_files_may_not_share_an_id_and_no_directory_is_no_tasks(tmp_path):
    (tmp_path / "a.yaml").write_text("id: t\nsystem: one\n")
    (tmp_path / "b.json").write_text('{"id": "t", "system": "two"}')
    with pytest.raises(ConfigError, match="taken by another file"):
        load_tasks(tmp_path)
    assert load_tasks(tmp_path / "none") == {} and load_tasks(None) == {}
