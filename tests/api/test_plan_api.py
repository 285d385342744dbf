"""`POST /v1/plan`: the same body as `POST /v1/jobs`, a plan back, nothing stored or run. The API runs under
uvicorn with the local dispatcher on a fake engine; tokens are counted with the embedded model's tokenizer."""

from __future__ import annotations

import json

from handler.engine.default_model import ensure_default_model
from handler.engine.tokens import load_tokenizer
from tests.api.test_openai_files import jsonl, serve, upload

PROMPTS = ["Name three rivers.", "Write a haiku about rain, in Catalan.", "What is 2 + 2?"]


def chat_tokens(settings, text: str) -> int:
    tok = load_tokenizer(str(ensure_default_model(settings.cache_dir)), True, None, False, None)
    return len(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False))


def test_a_plan_counts_the_jobs_tokens_and_ranks_the_gpus(tmp_path):
    with serve(tmp_path) as api:
        doc = {"id": "to-plan", "sampling": {"max_tokens": 40},
               "items": [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": p}]}
                         for i, p in enumerate(PROMPTS)]}
        r = api.http.post("/v1/plan", json=doc, params={"gpus": "cpu,L40S,H100", "platform": "runpod"})
        assert r.status_code == 200, r.text
        plan = r.json()
        want = sum(chat_tokens(api.settings, p) for p in PROMPTS)
        assert plan["tokens"]["items"] == 3 and plan["tokens"]["prompt_tokens"] == want
        assert plan["tokens"]["exact"] is True and plan["tokens"]["completion_tokens_bound"] == 3 * 40
        assert {row["gpu"] for row in plan["rows"]} == {"cpu", "L40S", "H100"}
        assert {row["platform"] for row in plan["rows"]} <= {"runpod", "local"}
        assert plan["recommendation"] is not None and plan["reason"] and plan["assumptions"]
        by_use = [(r["cost_usd"], r["time_s"]) for r in plan["rows"] if r["fits"] and r["tier"] != "active"]
        assert by_use == sorted(by_use) and plan["rows"][0] == plan["recommendation"]  # ranked by cost, then time
        # nothing was stored or run
        assert api.http.get("/v1/jobs").json()["data"] == [] and api.engine.started == []


def test_a_job_of_an_uploaded_file_plans_like_the_same_items_inline(tmp_path):
    with serve(tmp_path) as api:
        lines = [json.dumps({"custom_id": f"f{i}", "fields": {"n": i}}) for i in range(7)]
        f = upload(api, jsonl(*lines, '{"custom_id": "bad"}'))  # a bad line is refused, and not counted
        options = {"template": "Count to {{ n }} in French.", "sampling": {"max_tokens": 16}}
        by_file = api.http.post("/v1/plan", json={"input_file_id": f.id, **options}, params={"gpus": "cpu"})
        inline = api.http.post("/v1/plan", json={"items": [json.loads(x) for x in lines], **options},
                               params={"gpus": "cpu"})
        assert by_file.status_code == inline.status_code == 200, (by_file.text, inline.text)
        a, b = by_file.json()["tokens"], inline.json()["tokens"]
        assert (a["items"], a["prompt_tokens"]) == (b["items"], b["prompt_tokens"]) and a["items"] == 7
        assert (a["rejected"], b["rejected"]) == (1, 0)


def test_refusals_name_the_field(tmp_path):
    with serve(tmp_path) as api:
        doc = {"items": [{"custom_id": "a", "prompt": "hi"}]}
        gpu = api.http.post("/v1/plan", json=doc, params={"gpus": "cpu,TPU-v9"})
        assert gpu.status_code == 422 and gpu.json()["detail"][0]["field"] == "gpus"
        assert "TPU-v9" in gpu.json()["detail"][0]["message"] and "H100" in gpu.json()["detail"][0]["message"]
        template = api.http.post("/v1/plan", json={**doc, "template": "{% if %}"})
        assert template.status_code == 422 and template.json()["detail"][0]["field"] == "template"
        missing = api.http.post("/v1/plan", json={"input_file_id": "file-nope"})
        assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "input_file_id"
        workers = api.http.post("/v1/plan", json=doc, params={"workers": 0})
        assert workers.status_code == 422
