#!/usr/bin/env python3
"""Convert public checkpoints to mama.h model files (safetensors, SPEC A.8 names, with the
`mama_config` metadata).  See weights/README.md.

    python3 weights/convert.py dinov2    CKPT        -o vision.safetensors
    python3 weights/convert.py gpt2      HF_DIR      -o text.safetensors --tokenizer-out TOKDIR
    python3 weights/convert.py peft      ADAPTER_DIR -o lora.safetensors
    python3 weights/convert.py combine   --vision vision.safetensors --text text.safetensors
                                         [--lora lora.safetensors] -o model.safetensors
    python3 weights/convert.py reference LIGHTNING.ckpt -o model.safetensors [--tokenizer TOKDIR]
    python3 weights/convert.py model     --dinov2 CKPT --gpt2 HF_DIR [--peft ADAPTER_DIR]
                                         --tokenizer-out TOKDIR -o model.safetensors
Each subcommand's --help lists its options.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mama_weights as mw  # noqa: E402
import convert_dinov2  # noqa: E402
import convert_gpt2  # noqa: E402
import convert_peft  # noqa: E402
import convert_reference  # noqa: E402


def model_main(argv):
    """One step from the original checkpoints to a complete model file."""
    ap = argparse.ArgumentParser(prog="convert.py model", description=model_main.__doc__)
    ap.add_argument("--dinov2", required=True, help="DINOv2 checkpoint (torch hub .pth or Hugging Face)")
    ap.add_argument("--gpt2", required=True, help="Hugging Face GPT-2-family directory")
    ap.add_argument("--peft", help="PEFT LoRA adapter directory")
    ap.add_argument("--vision-heads", type=int)
    ap.add_argument("-o", "--output", required=True)
    convert_gpt2.add_args(ap)
    mw.add_common_args(ap)
    mw.add_model_args(ap)
    args = ap.parse_args(argv)
    vision = convert_dinov2.convert(args.dinov2, args.vision_heads, args.trust_pickle)
    text = convert_gpt2.convert(args.gpt2, args.context, args.text_heads, args.seed, args.tokenizer_out, args.vocab,
                                args.trust_pickle)
    lora = convert_peft.convert(args.peft, None, args.trust_pickle, args.lora_alpha) if args.peft else None
    tensors, cfg = mw.assemble(vision, text, lora, None, mw.model_overrides(args), args.seed)
    mw.finish_model(args.output, tensors, cfg, args, source="dinov2+gpt2" + ("+peft" if lora else ""))
    return 0


COMMANDS = {
    "dinov2": convert_dinov2.main,
    "gpt2": convert_gpt2.main,
    "peft": convert_peft.main,
    "reference": convert_reference.main,
    "combine": mw.combine_main,
    "model": model_main,
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    try:
        sys.exit(main())
    except mw.ConvertError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
