"""The CNN peers of the quality table (docs/quality.md): FSRCNN, ESPCN and LapSRN with their
published x4 weights (../shared/peers, TensorFlow graphs for OpenCV's dnn_superres), run on a
folder of LR images. Benchmark tooling, never part of the product.

    .venv-iqa/bin/python tests/iqa/peers.py LR_DIR OUT_ROOT [--peers fsrcnn,espcn,lapsrn]
        [--peers-dir ../shared/peers]

writes OUT_ROOT/<peer>/<stem>.png (x4, 8-bit RGB) for every PNG in LR_DIR, and skips an image
whose output already exists (the LR folder is fixed per evaluation set, so the peers run once;
scripts/quality.sh reuses their outputs for every model it scores). Every model file's SHA-256
is checked against ../shared/peers/README.md's table before it is read.
"""

import argparse
import hashlib
import os
import sys

import cv2

# name -> (file, sha256) as listed in ../shared/peers/README.md.
PEERS = {
    "fsrcnn": ("FSRCNN_x4.pb", "5c68d18db561aed8ead4ffedf1b897ea615baaf60ebf6c35f8e641f8fa4a21bf"),
    "espcn": ("ESPCN_x4.pb", "e403f06309229cf36009cd8fb0da032ba7643fae9f15cf94fe562e8edf8fef47"),
    "lapsrn": ("LapSRN_x4.pb", "d3e95c93cafae5ce5a8ed57ce9abf07f2de58da8c5d6d656b766774969835ee2"),
}
SCALE = 4


def checked_model(peers_dir, name):
    file, expected = PEERS[name]
    path = os.path.join(peers_dir, file)
    if not os.path.isfile(path):
        sys.exit(f"peers.py: {path} is missing (the published {name} x4 weights; see "
                 f"../shared/peers/README.md)")
    with open(path, "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    if actual != expected:
        sys.exit(f"peers.py: {path} has SHA-256 {actual}, expected {expected}")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lr_dir")
    parser.add_argument("out_root")
    parser.add_argument("--peers", default="fsrcnn,espcn,lapsrn")
    parser.add_argument("--peers-dir", default=os.environ.get("GDPO_SR_PEERS_DIR", "../shared/peers"))
    args = parser.parse_args()

    names = [n for n in args.peers.split(",") if n]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        sys.exit(f"peers.py: unknown peer(s) {unknown} (known: {', '.join(PEERS)})")
    images = sorted(f for f in os.listdir(args.lr_dir) if f.lower().endswith(".png"))
    if not images:
        sys.exit(f"peers.py: no PNG images in {args.lr_dir}")
    cv2.setNumThreads(int(os.environ.get("PEER_THREADS", "0")) or cv2.getNumberOfCPUs())
    for name in names:
        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(checked_model(args.peers_dir, name))
        sr.setModel(name, SCALE)
        out_dir = os.path.join(args.out_root, name)
        os.makedirs(out_dir, exist_ok=True)
        written = 0
        for file in images:
            out = os.path.join(out_dir, file)
            if os.path.exists(out):
                continue
            lr = cv2.imread(os.path.join(args.lr_dir, file), cv2.IMREAD_COLOR)  # BGR, as the model expects
            if lr is None:
                sys.exit(f"peers.py: cannot read {os.path.join(args.lr_dir, file)}")
            up = sr.upsample(lr)
            want = (lr.shape[0] * SCALE, lr.shape[1] * SCALE)
            if up.shape[:2] != want:
                sys.exit(f"peers.py: {name} returned {up.shape[:2]} for {file}, expected {want}")
            partial = out + ".partial.png"
            cv2.imwrite(partial, up)
            os.replace(partial, out)
            written += 1
        print(f"peers.py: {name}: {written} new, {len(images) - written} kept, in {out_dir}")


if __name__ == "__main__":
    main()
