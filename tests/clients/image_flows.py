"""The flows of Triton's own image_client.py (triton-inference-server/client,
src/python/examples/), written against the same tritonclient calls: it can't be copied here
or downloaded in CI. Runs in .venv-clients; prints what it got as JSON.

    image_flows.py http|grpc URL MODEL CLASSES BATCH sync|async|stream FILE...

Like image_client.py: the model's metadata and config must describe one image input of 3
dimensions (plus the batch) in FORMAT_NCHW or FORMAT_NHWC and one FP32 vector output; each
file is resized to the model's H x W (bilinear, no crop), sent as FP32 0-255 pixels
(`--scaling NONE`), BATCH at a time, cycling through the files until each was sent once, and
the top CLASSES come back through the classification extension as "score:index:label".
"""

import json
import queue
import sys
from functools import partial

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.model_config_pb2 as mc
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def parse_model(metadata: dict, config: dict) -> dict:
    """image_client.py's checks, on the JSON forms of metadata and config."""
    if len(metadata["inputs"]) != 1 or len(metadata["outputs"]) != 1 or len(config["input"]) != 1:
        raise ValueError("expecting 1 input and 1 output")
    inp, cfg_in, out = metadata["inputs"][0], config["input"][0], metadata["outputs"][0]
    if out["datatype"] != "FP32":
        raise ValueError(f"expecting output datatype to be FP32, got {out['datatype']}")
    batching = int(config.get("max_batch_size", 0)) > 0
    if sum(int(d) > 1 for d in out["shape"][1 if batching else 0 :]) > 1:
        raise ValueError("expecting model output to be a vector")
    shape = [int(d) for d in inp["shape"]]
    if len(shape) != 3 + batching:
        raise ValueError(f"expecting input to have {3 + batching} dimensions, got {len(shape)}")
    fmt = cfg_in.get("format", "FORMAT_NONE")
    fmt = dict(mc.ModelInput.Format.items())[fmt] if isinstance(fmt, str) else fmt
    if fmt not in (mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC):
        raise ValueError(f"unexpected input format {fmt}")
    dims = shape[1:] if batching else shape
    c, h, w = dims if fmt == mc.ModelInput.FORMAT_NCHW else (dims[2], dims[0], dims[1])
    return {
        "batching": batching,
        "input": inp["name"],
        "output": out["name"],
        "c": c,
        "h": h,
        "w": w,
        "nchw": fmt == mc.ModelInput.FORMAT_NCHW,
        "dtype": inp["datatype"],
    }


def preprocess(path: str, m: dict) -> np.ndarray:
    image = Image.open(path).convert("L" if m["c"] == 1 else "RGB").resize((m["w"], m["h"]), Image.BILINEAR)
    pixels = np.array(image).astype(triton_to_np_dtype(m["dtype"]))  # --scaling NONE
    return np.transpose(pixels, (2, 0, 1)) if m["nchw"] else pixels


def main(protocol, url, model, classes, batch, mode, *files):
    mod = grpcclient if protocol == "grpc" else httpclient
    client = mod.InferenceServerClient(url, **({"concurrency": 20} if protocol == "http" and mode == "async" else {}))
    as_json = {"as_json": True} if protocol == "grpc" else {}
    try:
        config = client.get_model_config(model, **as_json)
        m = parse_model(client.get_model_metadata(model, **as_json), config.get("config", config))
    except (InferenceServerException, ValueError) as exc:
        print(json.dumps({"refused": str(exc)}))
        return
    images = [preprocess(f, m) for f in sorted(files)]
    batches, i, done = [], 0, False
    while not done:  # image_client.py's cycling: fill the last batch from the start again
        batch_ids = []
        for _ in range(int(batch)):
            batch_ids.append(i)
            i = (i + 1) % len(images)
            done = done or i == 0
        batches.append(batch_ids)
    results, errors, answers = [None] * len(batches), [], queue.Queue()
    callback = lambda n, result, error: answers.put((n, result, error))  # noqa: E731
    if mode == "stream":
        client.start_stream(callback=partial(callback, None))
    handles = []
    for n, ids in enumerate(batches):
        inputs = [mod.InferInput(m["input"], [len(ids), m["c"], m["h"], m["w"]], m["dtype"])]
        inputs[0].set_data_from_numpy(np.stack([images[k] for k in ids]))
        outputs = [mod.InferRequestedOutput(m["output"], class_count=int(classes))]
        if mode == "stream":
            client.async_stream_infer(model, inputs, request_id=str(n), outputs=outputs)
        elif mode == "async" and protocol == "grpc":
            client.async_infer(model, inputs, partial(callback, n), request_id=str(n), outputs=outputs)
        elif mode == "async":
            handles.append((n, client.async_infer(model, inputs, request_id=str(n), outputs=outputs)))
        else:
            results[n] = client.infer(model, inputs, request_id=str(n), outputs=outputs)
    for n, handle in handles:
        results[n] = handle.get_result()
    if mode == "stream" or (mode == "async" and protocol == "grpc"):
        for _ in batches:
            n, result, error = answers.get(timeout=120)
            if error is not None:
                errors.append(str(error))
                continue
            n = int(result.get_response(**as_json).get("id")) if n is None else n
            results[n] = result
        if mode == "stream":
            client.stop_stream()
    rows = []
    for n, ids in enumerate(batches):
        if results[n] is None:  # answered with an error, listed in "errors"
            continue
        out = results[n].as_numpy(m["output"])  # image_client.py: as many rows as the batch
        rows += [{"file": k, "classes": [c.decode() for c in row]} for k, row in zip(ids, out, strict=True)]
    print(json.dumps({"model": m, "batches": len(batches), "rows": rows, "errors": errors}))


if __name__ == "__main__":
    main(*sys.argv[1:])
