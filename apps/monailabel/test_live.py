"""Live test of the MONAI Label app: a real server on 127.0.0.1, real HTTP requests.

Run by ``test_live.sh`` inside the app's own virtualenv (MONAI Label 0.8.5 installed). It
1. writes phantom cases (reduced grid) and a MONAI Label studies folder of them (labels in
   ``labels/final/``), and runs ``cascade predict --demo`` on them as the reference;
2. starts ``monailabel start_server`` with the demo weights and checks ``/info/``, then
   ``/infer/atria_cascade`` and ``/infer/atria_localizer`` against the reference voxel for voxel
   (values, shape, affine), by datastore id and by upload, with client settings, and the one-line
   HTTP 400 answers to bad input;
3. trains both stages through ``/train/<task>`` (one short epoch each; the segmenter tracked
   with MLflow, whose default sqlite store must then hold the run) and checks that the published
   localizer is then served;
4. in this process, proves that training starts from the pretrained weights (the network's state
   at the first iteration equals the checkpoint; with ``pretrained: false`` it does not);
5. restarts the server with a work folder holding no checkpoints and checks the HTTP 503 message;
6. serves unlabelled phantoms: ``/scoring/uncertainty`` stores each one's uncertainty (equal to ``cascade
   predict --tta true``'s), ``/activelearning/uncertainty`` serves them from the least certain on as
   they are labelled.

The server is stopped on every exit path. The last line is ``monailabel live test: PASS`` or
``monailabel live test: FAIL (...)``; the exit status is 0 or 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np

APP_DIR = Path(__file__).resolve().parent
CASES = 2
PHANTOM_GRID = ["--shape", "24", "160", "160", "--spacing", "2.5", "1.25", "1.25"]
SMALL_GRID = ["--shape", "16", "112", "112", "--spacing", "2.5", "1.25", "1.25"]  # the scoring's cases (8 passes each)


def log(message: str) -> None:
    print(f"[live] {message}", flush=True)


def run(command: list[str], cwd: Path) -> None:
    log("$ " + " ".join(command))
    subprocess.run(command, check=True, cwd=cwd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``monailabel start_server`` in its own process group, stopped on exit (SIGTERM, then SIGKILL)."""

    def __init__(self, studies: Path | str, conf: dict[str, str], work: Path, name: str,
                 workers: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"server-{name}.log"
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
                   "--studies", str(studies), "--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in conf.items():
            command += ["--conf", key, value]
        if workers:
            command += ["--workers", str(workers)]
        env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
               "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(work / "dicomweb-cache")}
        log("$ " + " ".join(command) + f"  (log {self.log_path})")
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            command, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True
        )

    def __enter__(self) -> Server:
        try:
            return self._wait_until_up()
        except BaseException:
            self.__exit__()
            raise

    def _wait_until_up(self) -> Server:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} while starting:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/info/", timeout=5) as response:
                    if response.status == 200:
                        log(f"server up on {self.url}")
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise RuntimeError(f"server not answering /info/ after 180 s:\n{self.tail()}")

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log_file.close()
        log(f"server on port {self.port} stopped (exit {self.process.returncode})")

    def tail(self, lines: int = 30) -> str:
        self.log_file.flush()
        return "".join(self.log_path.read_text().splitlines(keepends=True)[-lines:])

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=600) as response:
            return json.loads(response.read())

    def put(self, path: str, upload: Path, field: str = "file", params: dict | None = None) -> tuple[int, bytes]:
        """PUT a file as the multipart ``field`` (``file``: MONAI Label's image upload, ``label``: a
        label) with optional ``params`` JSON; (status, content)."""
        boundary = uuid.uuid4().hex
        form = (f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
                f'{json.dumps(params)}\r\n'.encode() if params else b"")
        data = (form + f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{upload.name}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n".encode() + upload.read_bytes()
                + f"\r\n--{boundary}--\r\n".encode())
        request = urllib.request.Request(self.url + path, data=data, method="PUT",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def post(self, path: str, params: dict | None = None, upload: Path | None = None, body: dict | None = None,
             timeout: float = 900) -> tuple[int, bytes]:
        """POST a multipart form (``params`` JSON and an optional file) or a JSON body; (status, content)."""
        if body is not None:
            data, content_type = json.dumps(body).encode(), "application/json"
        else:
            boundary = uuid.uuid4().hex
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
                     f'{json.dumps(params or {})}\r\n'.encode()]
            if upload is not None:
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{upload.name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + upload.read_bytes() + b"\r\n"
                )
            data, content_type = (b"".join(parts) + f"--{boundary}--\r\n".encode(),
                                  f"multipart/form-data; boundary={boundary}")
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


class Orthanc:
    """An Orthanc PACS with its DICOMweb plugin on 127.0.0.1 (Debian: ``apt-get install orthanc
    orthanc-dicomweb``), storing under ``work``, stopped on exit."""

    PLUGINS = os.environ.get("ORTHANC_PLUGINS", "/usr/share/orthanc/plugins")

    def __init__(self, work: Path) -> None:
        binary = shutil.which("Orthanc")
        if binary is None or not Path(self.PLUGINS, "libOrthancDicomWeb.so").is_file():
            raise RuntimeError(f"Orthanc with its DICOMweb plugin not found (PATH, {self.PLUGINS}): "
                               "apt-get install orthanc orthanc-dicomweb")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder = work / "orthanc"
        folder.mkdir()
        config = {
            "Name": "atria-cascade-live", "HttpPort": self.port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "Plugins": [self.PLUGINS], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log_path = work / "orthanc.log"
        self.log_file = self.log_path.open("w")
        log(f"$ {binary} {folder / 'orthanc.json'}  (log {self.log_path})")
        self.process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=self.log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> Orthanc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/dicom-web/studies", timeout=5):
                    log(f"Orthanc up on {self.url}")
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"Orthanc not answering after 60 s:\n{self.log_path.read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        self.log_file.close()

    def store(self, files: list[Path]) -> None:
        """Store DICOM files through Orthanc's REST API (POST /instances)."""
        for path in files:
            request = urllib.request.Request(self.url + "/instances", data=path.read_bytes(), method="POST",
                                             headers={"Content-Type": "application/dicom"})
            with urllib.request.urlopen(request, timeout=30) as response:
                check_status = json.loads(response.read()).get("Status")
                if check_status not in ("Success", "AlreadyStored"):
                    raise AssertionError(f"Orthanc refused {path}: {check_status}")

    def retrieve(self, study: str, series: str, path: Path) -> Path:
        """The series' single instance (found by QIDO-RS, fetched by Orthanc's REST API), written to ``path``."""
        [instance] = self.qido(f"/studies/{study}/series/{series}/instances")
        request = urllib.request.Request(self.url + "/tools/lookup", data=instance["00080018"]["Value"][0].encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            [found] = json.loads(response.read())
        with urllib.request.urlopen(f"{self.url}/instances/{found['ID']}/file", timeout=30) as response:
            path.write_bytes(response.read())
        return path

    def qido(self, path: str) -> list[dict]:
        request = urllib.request.Request(self.url + "/dicom-web" + path, headers={"Accept": "application/dicom+json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"[]")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
    log(f"ok: {message}")


def check_same_nifti(result: Path, reference: Path, image: Path, what: str) -> None:
    """Values, dtype, shape and affine of ``result`` equal ``reference``; geometry equals ``image``."""
    got, want, source = nib.load(result), nib.load(reference), nib.load(image)
    got_array, want_array = np.asanyarray(got.dataobj), np.asanyarray(want.dataobj)
    check(got_array.dtype == np.uint8, f"{what}: uint8 label map")
    check(got.shape == source.shape and np.allclose(got.affine, source.affine, atol=1e-6),
          f"{what}: input's shape {got.shape} and affine")
    check(np.array_equal(got.affine, want.affine), f"{what}: affine equals the reference's")
    differ = int(np.count_nonzero(got_array != want_array)) if got.shape == want.shape else -1
    check(differ == 0, f"{what}: equals `cascade predict` voxel for voxel "
                       f"({differ} voxels differ, labels {np.unique(got_array).tolist()})")


def infer_to_file(server: Server, task: str, out: Path, image_id: str | None = None, upload: Path | None = None,
                  params: dict | None = None) -> dict:
    """Run an infer task; write the returned label map to ``out``; return the result JSON."""
    query = urllib.parse.urlencode({"image": image_id or "", "output": "image"})
    status, content = server.post(f"/infer/{task}?{query}", params=params, upload=upload)
    if status != 200:
        raise AssertionError(f"/infer/{task} answered {status}: {content[:500]!r}\n{server.tail()}")
    out.write_bytes(content)
    query = urllib.parse.urlencode({"image": image_id or "", "output": "json"})
    status, content = server.post(f"/infer/{task}?{query}", params=params, upload=upload)
    check(status == 200, f"/infer/{task} ({image_id or upload.name}, {params or 'default settings'}) answers 200")
    return json.loads(content)


def make_data(work: Path) -> tuple[Path, Path, list[str]]:
    """Phantoms (MBAS layout) and a MONAI Label studies folder of the same files."""
    phantoms, studies = work / "phantoms", work / "studies"
    run([sys.executable, "-m", "cascade.cli", "phantom", str(phantoms), "--cases", str(CASES), "--seed", "1000",
         *PHANTOM_GRID], work)
    (studies / "labels" / "final").mkdir(parents=True)
    cases = sorted(p.name for p in phantoms.iterdir())
    for case in cases:
        shutil.copyfile(phantoms / case / f"{case}_gt.nii.gz", studies / f"{case}.nii.gz")
        shutil.copyfile(phantoms / case / f"{case}_label.nii.gz", studies / "labels" / "final" / f"{case}.nii.gz")
    return phantoms, studies, cases


def check_info(server: Server) -> None:
    from cascade.labels import CLASS_COLOURS, CLASS_NAMES

    info = server.get("/info/")
    models = info.get("models", {})
    check({"atria_cascade", "atria_localizer"} <= set(models), f"/info/ lists the infer tasks {sorted(models)}")
    cascade_info = models["atria_cascade"]
    check(cascade_info["labels"] == {name: value for value, name in CLASS_NAMES.items()},
          f"labels {cascade_info['labels']}")
    check(cascade_info["label_colors"] == {CLASS_NAMES[v]: list(c) for v, c in CLASS_COLOURS.items()},
          "label colours of cascade.labels")
    check({"overlap", "tta", "mask_region"} <= set(cascade_info["config"]), f"client settings {cascade_info['config']}")
    check({"atria_localizer", "atria_segmenter"} <= set(info.get("trainers", {})),
          f"/info/ lists the train tasks {sorted(info['trainers'])}")


def check_inference(server: Server, work: Path, phantoms: Path, cases: list[str]) -> None:
    reference, results = work / "reference", work / "results"
    results.mkdir()
    for case in cases:
        image = phantoms / case / f"{case}_gt.nii.gz"
        infer_to_file(server, "atria_cascade", results / f"{case}_label.nii.gz", image_id=case)
        check_same_nifti(results / f"{case}_label.nii.gz", reference / "default" / f"{case}_label.nii.gz", image,
                         f"atria_cascade {case}")
        infer_to_file(server, "atria_localizer", results / f"{case}_mask.nii.gz", image_id=case)
        check_same_nifti(results / f"{case}_mask.nii.gz", reference / "default" / f"{case}_mask.nii.gz", image,
                         f"atria_localizer {case}")
    case = cases[0]
    image = phantoms / case / f"{case}_gt.nii.gz"
    infer_to_file(server, "atria_cascade", results / "upload_label.nii.gz", upload=image)
    check_same_nifti(results / "upload_label.nii.gz", reference / "default" / f"{case}_label.nii.gz", image,
                     f"atria_cascade {case} uploaded")
    settings = {"overlap": 0, "mask_region": False}
    answer = infer_to_file(server, "atria_cascade", results / "settings_label.nii.gz", image_id=case, params=settings)
    check(answer["settings"] == {"overlap": 0.0, "tta": False, "mask_region": False, "device": "cpu"},
          f"settings echoed {answer['settings']}")
    check_same_nifti(results / "settings_label.nii.gz", reference / "overlap0-whole" / f"{case}_label.nii.gz", image,
                     f"atria_cascade {case} with {settings}")

    status, content = server.post(f"/infer/atria_cascade?image={case}&output=json", params={"overlap": 1.5})
    check(status == 400 and b"overlap" in content, f"overlap 1.5 -> HTTP {status} {content.decode()}")
    broken = work / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    status, content = server.post("/infer/atria_cascade?output=json", upload=broken)
    check(status == 400 and b"not a readable NIfTI" in content, f"broken upload -> HTTP {status} {content.decode()}")
    check_client_mistakes(server, work, case)
    run([sys.executable, str(APP_DIR / "client_example.py"), server.url, str(image),
         str(results / "client_label.nii.gz")], work)
    check_same_nifti(results / "client_label.nii.gz", reference / "default" / f"{case}_label.nii.gz", image,
                     "client_example.py")


def check_client_mistakes(server: Server, work: Path, case: str) -> None:
    """Each client mistake the app can see is a 4xx naming what was wrong, never a 500."""
    status, content = server.post(f"/infer/atria_cascade?image={case}&output=json", params={"overlapp": 0.5})
    check(status == 400 and b"overlapp" in content, f"unknown setting -> HTTP {status} {content.decode()}")
    status, content = server.post("/infer/atria_localizer?image=" + case + "&output=json", params={"mask_region": True})
    check(status == 400 and b"mask_region" in content,
          f"stage-2 setting for the localizer -> HTTP {status} {content.decode()}")
    status, content = server.post("/infer/atria_cascade?image=no_such_case&output=json")
    check(status == 400 and b"no_such_case" in content, f"unknown image id -> HTTP {status} {content.decode()}")
    status, content = server.post(f"/infer/no_such_model?image={case}&output=json")
    check(status == 404 and b"no_such_model" in content, f"unknown model -> HTTP {status} {content.decode()}")
    text = work / "notes.nii.gz"
    text.write_text("a text file, not an image")
    status, content = server.put("/datastore/?image=notes", text)
    check(status == 400 and b"not a readable NIfTI" in content,
          f"text file PUT /datastore/ -> HTTP {status} {content.decode()}")
    dicom = work / "slice.dcm"
    dicom.write_bytes(b"\0" * 128 + b"DICM")
    status, content = server.put("/datastore/?image=slice", dicom)
    check(status == 400 and b"only NIfTI" in content, f"DICOM file PUT /datastore/ -> HTTP {status} {content.decode()}")
    check("notes" not in json.dumps(server.get("/datastore/?output=all")), "refused uploads are not stored")


def stored_infos(server: Server) -> dict[str, dict]:
    """Image id -> its datastore info, as the server holds it."""
    return {image: item["image"]["info"] for image, item in server.get("/datastore/?output=all")["objects"].items()}


def wait_for_scoring(server: Server, task_id: str | None = None, timeout: float = 900) -> dict:
    """Wait until no scoring task runs (or task ``task_id`` has ended); return the last task's state."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            tasks = server.get("/scoring/?all=true")
        except urllib.error.HTTPError as err:  # 404: no scoring task yet
            if err.code != 404:
                raise
            tasks = []
        task = next((t for t in tasks if t["id"] == task_id), None) if task_id else (tasks[-1] if tasks else {})
        if task is not None and task.get("status") not in ("SUBMITTED", "RUNNING"):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"scoring still running after {timeout} s")
        time.sleep(2)


def check_uncertainty_active_learning(work: Path) -> None:
    """The scoring ``uncertainty`` stores each unlabelled image's uncertainty, equal to ``cascade predict
    --demo --tta true``'s (the demo weights are one model: the scoring turns mirroring on): at server start
    (MONAI Label's automatic scoring), then on ``POST /scoring/uncertainty`` for an image added since
    (those scored are skipped); an image that cannot be scored is logged in one line and skipped. The
    strategy ``uncertainty`` serves the largest stored value first, then, once it is labelled, the next,
    the unscored image last, and ``{}`` when every image is labelled."""
    import csv

    phantoms, studies = work / "phantoms-al", work / "studies-al"
    run([sys.executable, "-m", "cascade.cli", "phantom", str(phantoms), "--cases", "3", "--seed", "2000",
         *SMALL_GRID], work)
    studies.mkdir()
    cases = sorted(p.name for p in phantoms.iterdir())
    for case in cases[:2]:
        shutil.copyfile(phantoms / case / f"{case}_gt.nii.gz", studies / f"{case}.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4)), studies / "unusable.nii.gz")
    run([sys.executable, "-m", "cascade.cli", "predict", str(phantoms), str(work / "reference" / "tta"),
         "--demo", "--device", "cpu", "--tta", "true"], work)
    with (work / "reference" / "tta" / "predictions.csv").open() as report:
        reference = {row["case"]: float(row["uncertainty"]) for row in csv.DictReader(report)}

    def check_stored(server: Server, expected: list[str], since: float, when: str) -> dict[str, float]:
        deadline = time.monotonic() + 30  # the server reloads the datastore file the scoring process wrote
        while not all(stored_infos(server)[case].get("uncertainty_ts", 0) >= int(since) for case in expected):
            if time.monotonic() > deadline:
                raise AssertionError(f"{when}: the datastore holds no new scores for {expected}: "
                                     f"{stored_infos(server)}")
            time.sleep(1)
        infos = stored_infos(server)
        stored = {case: infos[case]["uncertainty"] for case in expected}
        check(all(abs(stored[case] - reference[case]) <= 6e-5 and infos[case]["uncertainty_passes"] == 8
                  for case in expected),
              f"{when}: stored uncertainties {', '.join(f'{v:.4f}' for v in stored.values())} equal "
              f"`cascade predict --tta true`'s {', '.join(f'{reference[c]:.4f}' for c in expected)} (8 passes)")
        check("uncertainty" not in infos["unusable"], f"{when}: the unusable image has no stored uncertainty")
        return stored

    started = time.time()
    with Server(studies, {"demo": "true", "model_dir": str(work / "model-al")}, work, "uncertainty") as server:
        info = server.get("/info/")
        check({"random", "uncertainty"} <= set(info.get("strategies", {})) and "uncertainty" in info.get("scoring", {}),
              f"/info/ lists the strategies {sorted(info.get('strategies', {}))} "
              f"and the scoring methods {sorted(info.get('scoring', {}))}")
        task = wait_for_scoring(server)  # MONAI Label starts every scoring method at server start
        check(task.get("status") == "DONE", f"the scoring at server start ended {task.get('status')}")
        check_stored(server, cases[:2], started, "scoring at server start")
        status, content = server.put(f"/datastore/?image={cases[2]}", phantoms / cases[2] / f"{cases[2]}_gt.nii.gz")
        check(status == 200, f"{cases[2]} added to the datastore -> HTTP {status}")

        started, logged = time.time(), len(server.log_path.read_text())
        status, content = server.post("/scoring/uncertainty", body={})
        check(status == 200, f"POST /scoring/uncertainty accepted -> HTTP {status}")
        task = wait_for_scoring(server, json.loads(content)["id"])
        log_lines = server.log_path.read_text()[logged:]
        check(task.get("status") == "DONE" and "'scored': 1, 'skipped': 2, 'failed': ['unusable']" in log_lines,
              f"POST /scoring/uncertainty ended {task.get('status')}: the new image scored, 2 skipped (scored), "
              "the unusable one failed")
        check("mirroring on: 8 passes" in log_lines,
              "one model served: the scoring turned test-time mirroring on (8 passes)")
        [failure] = [line for line in log_lines.splitlines() if "unusable: not scored:" in line]
        check("NaN" in failure, f"the unusable image logged in one line: {failure.split('uncertainty: ', 1)[-1]}")
        stored = {**check_stored(server, cases[2:], started, "POST /scoring/uncertainty"),
                  **check_stored(server, cases[:2], 0, "all")}

        status, content = server.post("/activelearning/random", body={})
        check(status == 200 and json.loads(content).get("id") in [*cases, "unusable"],
              "MONAI Label's random strategy still serves")
        expected = [*sorted(cases, key=lambda case: -stored[case]), "unusable"]
        for rank, image in enumerate(expected):
            status, content = server.post("/activelearning/uncertainty", body={})
            served = json.loads(content).get("id") if status == 200 else content
            check(served == image, f"next sample {rank + 1}: {served} (" + (
                f"uncertainty {stored[image]:.4f}, the largest of the unlabelled" if image in stored
                else "not scored: after the scored") + ")")
            label = phantoms / cases[0] / f"{cases[0]}_label.nii.gz"  # any label file: the datastore checks none
            status, content = server.put(f"/datastore/label?image={image}&tag=final", label, field="label")
            check(status == 200, f"{image} labelled (final) -> HTTP {status}")
        status, content = server.post("/activelearning/uncertainty", body={})
        check(status == 200 and json.loads(content) == {},
              f"every image labelled: next sample answers {content.decode()}")


def check_concurrency(studies: Path, work: Path, cases: list[str], workers: int = 1, requests: int = 4) -> None:
    """``requests`` concurrent inferences on a server of ``workers`` processes while ``/info/`` is polled:
    every inference answers 200, and ``/info/`` within 1 s each time (the app runs inference off the
    event loop, one at a time by default: lib/serving.py); the latencies are logged."""
    import threading

    with Server(studies, {"demo": "true", "model_dir": str(work / "model-concurrency")}, work, "concurrency",
                workers=workers) as server:
        for case in cases[:workers]:  # warm every worker's engine cache (the OS picks the worker)
            server.post(f"/infer/atria_cascade?image={case}&output=json")
        results: dict[int, tuple[int, float]] = {}

        def infer(index: int) -> None:
            start = time.perf_counter()
            status, _ = server.post(f"/infer/atria_cascade?image={cases[index % len(cases)]}&output=json")
            results[index] = (status, time.perf_counter() - start)

        threads = [threading.Thread(target=infer, args=(i,)) for i in range(requests)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        polls = []
        while any(thread.is_alive() for thread in threads):
            began = time.perf_counter()
            server.get("/info/")
            polls.append((round(began - start, 1), round(time.perf_counter() - began, 2)))
            time.sleep(0.5)
        for thread in threads:
            thread.join()
        log(f"{requests} concurrent inferences on {workers} workers: "
            + ", ".join(f"HTTP {s} in {t:.1f} s" for s, t in sorted(results.values(), key=lambda r: r[1])))
        log(f"/info/ meanwhile (sent at s, answered in s): {polls}")
        check(all(status == 200 for status, _ in results.values()) and len(results) == requests,
              f"{requests} concurrent inferences answer 200")
        slowest = max(seconds for _, seconds in polls)
        check(len(polls) > 1 and slowest < 1.0,
              f"/info/ answered within {slowest:.2f} s while inferences ran ({len(polls)} polls)")


def check_training_route(server: Server, model_dir: Path, case: str) -> None:
    """Both stages train through MONAI Label's REST API (the segmenter tracked with MLflow in the
    app's default sqlite store); the published localizer is then served."""
    for task in ("atria_localizer", "atria_segmenter"):
        params = {"max_epochs": 1, "iterations_per_epoch": 1, "val_split": 0.5,
                  **({"tracking": "mlflow"} if task == "atria_segmenter" else {})}
        status, content = server.post(f"/train/{task}", body=params)
        check(status == 200, f"/train/{task} {params} accepted")
        task_id = json.loads(content)["id"]
        deadline = time.monotonic() + 900
        while True:
            state = next(t for t in server.get("/train/?all=true") if t["id"] == task_id)
            if state.get("status") not in ("SUBMITTED", "RUNNING"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"/train/{task} still running after 900 s")
            time.sleep(3)
        details = "".join(state.get("details", []))
        check(state.get("status") == "DONE", f"/train/{task} finished with status {state.get('status')}"
              + ("" if state.get("status") == "DONE" else f"\n{details}"))
        published = model_dir / task / "model.pt"
        check(published.is_file(), f"{task} published {published}")
        stats = server.get("/info/")["train_stats"][task]
        check("val_mean_dice" in stats.get("eval", {}).get("metrics", {}),
              f"{task} train stats {json.dumps(stats.get('eval', {}).get('metrics'))}")
        if "tracking" in params:
            check_mlflow_store(model_dir / task / "mlflow.db")
    status, content = server.post(f"/infer/atria_localizer?image={case}&output=json")
    served = json.loads(content)["checkpoints"]["localizer"] if status == 200 else content
    check(served == [str(model_dir / "atria_localizer" / "model.pt")], f"the published localizer is served: {served}")


def check_dicomweb_datastore(work: Path, phantoms: Path, case: str) -> None:
    """A DICOMweb datastore: a phantom written as an MR series into Orthanc, served by the app with
    ``--studies <orthanc>/dicom-web`` and inferred by its SeriesInstanceUID; the label map has the
    series' geometry and agrees with `cascade predict` on the phantom's NIfTI file."""
    sys.path.insert(0, str(APP_DIR.parents[1]))  # the checkout's test helper writes the series
    import pydicom
    import pydicom_seg
    from tests.dicom_series import write_series

    from cascade.labels import CLASS_NAMES

    image = phantoms / case / f"{case}_gt.nii.gz"
    files = write_series(nib.load(image), work / "dicom" / case)
    first = pydicom.dcmread(files[0])
    series_uid, study_uid = str(first.SeriesInstanceUID), str(first.StudyInstanceUID)
    with Orthanc(work) as orthanc:
        orthanc.store(files)
        check(len(orthanc.qido(f"/series?SeriesInstanceUID={series_uid}")) == 1,
              f"Orthanc holds the series ({len(files)} slices)")
        studies = f"{orthanc.url}/dicom-web"
        with Server(studies, {"demo": "true", "model_dir": str(work / "model-dicomweb")}, work, "dicomweb") as server:
            total = server.get("/datastore/").get("total")
            check(total == 1, f"/datastore/ counts the MR series of {studies}: {total}")
            status, content = server.post("/activelearning/random", body={})
            sample = json.loads(content) if status == 200 else {}
            check(sample.get("id") == series_uid,
                  f"/activelearning/random (Slicer's next sample) gives the series {sample.get('id')}")
            out = work / "results" / "dicomweb_label.nii.gz"
            start = time.monotonic()
            infer_to_file(server, "atria_cascade", out, image_id=series_uid)
            log(f"/infer/atria_cascade on the DICOMweb series: {time.monotonic() - start:.1f} s "
                "(fetch, conversion and inference, twice)")
            names = [{"name": CLASS_NAMES[value], "idx": value} for value in (1, 2, 3)]  # as Slicer sends them
            status, content = server.put(f"/datastore/label?image={series_uid}&tag=final", out, field="label",
                                         params={"label_info": names})
            check(status == 200, f"the label saved as final -> HTTP {status} {content[:300].decode()}")
        [seg] = orthanc.qido(f"/series?Modality=SEG&StudyInstanceUID={study_uid}") or [None]
        seg_uid = seg["0020000E"]["Value"][0]
        seg_file = orthanc.retrieve(seg["0020000D"]["Value"][0], seg_uid, work / "seg.dcm")
        saved = pydicom.dcmread(seg_file)
        referenced = {str(item.SeriesInstanceUID) for item in saved.ReferencedSeriesSequence}
        check(saved.Modality == "SEG" and referenced == {series_uid} and saved.StudyInstanceUID == study_uid,
              f"Orthanc holds a DICOM SEG in the study referencing the series ({len(saved.SegmentSequence)} segments: "
              f"{', '.join(str(segment.SegmentLabel) for segment in saved.SegmentSequence)})")
        segments = pydicom_seg.MultiClassReader().read(saved).data  # (Z, Y, X) label values
        check(np.array_equal(np.transpose(segments, (2, 1, 0)), np.asanyarray(nib.load(out).dataobj)),
              "the SEG read back with pydicom-seg equals the label map voxel for voxel")
        got, want, source = (nib.load(out), nib.load(work / "reference" / "default" / f"{case}_label.nii.gz"),
                             nib.load(image))
        check(got.shape == source.shape and np.allclose(got.affine, source.affine, atol=1e-3),
              f"label map on the series' grid {got.shape}")
        got_array, want_array = np.asanyarray(got.dataobj), np.asanyarray(want.dataobj)
        dice = {value: 2 * np.sum((got_array == value) & (want_array == value))
                / max(np.sum(got_array == value) + np.sum(want_array == value), 1)
                for value in (1, 2, 3)}
        check(min(dice.values()) >= 0.98, "agrees with `cascade predict` on the NIfTI file "
                                          f"(Dice per class {', '.join(f'{d:.4f}' for d in dice.values())})")


def check_mlflow_store(store: Path) -> None:
    """The sqlite store MLflow tracking writes by default holds a finished run with its metrics."""
    check(store.is_file(), f"MLflow store {store} written")
    with sqlite3.connect(store) as db:
        runs = db.execute("SELECT status FROM runs").fetchall()
        metrics = sorted({key for (key,) in db.execute("SELECT key FROM metrics")})
    check(("FINISHED",) in runs and metrics, f"MLflow runs {[status for (status,) in runs]}, metrics {metrics}")


def check_pretrained_loaded(studies: Path, work: Path) -> None:
    """The localizer's training starts from its served checkpoint (and not with pretrained false)."""
    import torch
    from ignite.engine import Events
    from monailabel.datastore.local import LocalDatastore

    sys.path.insert(0, str(APP_DIR))
    from lib.trainers.stage_train import CascadeStageTrainTask
    from lib.weights import weights_from_conf

    class FirstIterationState:
        """Copies the network's weights when the first training iteration starts."""

        def __init__(self, network_of) -> None:
            self.network_of, self.state = network_of, None

        def attach(self, engine) -> None:
            engine.add_event_handler(Events.ITERATION_STARTED(once=1), self.capture)

        def capture(self, engine) -> None:
            self.state = {k: v.detach().clone() for k, v in self.network_of().state_dict().items()}

    class RecordingTrainTask(CascadeStageTrainTask):
        def train_handlers(self, context):
            self.recorder = FirstIterationState(lambda: context.network)
            return [*super().train_handlers(context), self.recorder]

    datastore = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    for pretrained in (True, False):
        weights = weights_from_conf({"demo": "true"}, work / f"model-pretrained-{pretrained}", "")
        served = weights.served("localizer").checkpoints[0]
        checkpoint = torch.load(served, map_location="cpu", weights_only=True)
        task = RecordingTrainTask(weights, "localizer", num_classes=2)
        stats = task({"max_epochs": 1, "iterations_per_epoch": 1, "val_split": 0.0, "pretrained": pretrained},
                     datastore)
        equal = all(torch.equal(task.recorder.state[k], v) for k, v in checkpoint.items())
        dice = stats["train"]["metrics"]["train_mean_dice"]
        check(equal == pretrained, f"pretrained={pretrained}: weights at iteration 1 "
                                   f"{'equal' if equal else 'differ from'} {served} "
                                   f"(first-epoch train Dice {dice:.3f})")


def check_missing_weights(studies: Path, work: Path, case: str) -> None:
    empty = work / "empty-work"
    empty.mkdir()
    with Server(studies, {"models": str(empty), "model_dir": str(work / "model-empty")}, work, "no-weights") as server:
        check("atria_cascade" in server.get("/info/")["models"], "without weights atria_cascade is still listed")
        status, content = server.post(f"/infer/atria_cascade?image={case}&output=json")
        detail = json.loads(content).get("detail", "") if content.startswith(b"{") else content.decode()
        check(status == 503 and str(empty) in detail and "--conf demo true" in detail,
              f"missing weights -> HTTP {status} {detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--dicomweb", action="store_true", help="also serve a DICOMweb datastore (Orthanc, on PATH)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="monailabel-live-"))
    step = "set-up"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("interrupted by SIGTERM"))  # stop the servers on a kill too
    try:
        # subprocesses run in the work folder, so they import the installed atria-cascade, not a checkout
        run([sys.executable, "-c", "import cascade; print('[live] atria-cascade imported from', cascade.__file__)"],
            work)
        phantoms, studies, cases = make_data(work)
        step = "reference predictions"
        run([sys.executable, "-m", "cascade.cli", "predict", str(phantoms), str(work / "reference" / "default"),
             "--demo", "--device", "cpu", "--save_masks"], work)
        run([sys.executable, "-m", "cascade.cli", "predict", str(phantoms / cases[0] / f"{cases[0]}_gt.nii.gz"),
             str(work / "reference" / "overlap0-whole"), "--demo", "--device", "cpu", "--overlap", "0",
             "--mask_region", "false"], work)
        model_dir = work / "model"
        step = "server with demo weights"
        with Server(studies, {"demo": "true", "model_dir": str(model_dir)}, work, "demo") as server:
            step = "/info/"
            check_info(server)
            step = "inference"
            check_inference(server, work, phantoms, cases)
            step = "training through /train/"
            check_training_route(server, model_dir, cases[0])
        if args.dicomweb:
            step = "DICOMweb datastore"
            check_dicomweb_datastore(work, phantoms, cases[0])
        step = "uncertainty scoring and next sample"
        check_uncertainty_active_learning(work)
        step = "concurrent inferences"
        check_concurrency(studies, work, cases)
        step = "pretrained weights"
        check_pretrained_loaded(studies, work)
        step = "missing weights"
        check_missing_weights(studies, work, cases[0])
    except BaseException as err:  # any failure or interruption is reported on the closing line
        traceback.print_exc()
        print(f"monailabel live test: FAIL ({step}: {str(err).splitlines()[0] if str(err) else type(err).__name__})",
              flush=True)
        return 1
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("monailabel live test: PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
