// The experiment as a runnable TRL script (`workbook export-recipe --engine trl OUT`), for users beyond one machine.
//  1. Same options: every SFTConfig/GRPOConfig key is the TRL name the workbook already uses (learning_rate, beta,
//     num_generations, ...); workbook-only options map to TRL's (dtype -> bf16) or are left out (see the header).
//  2. Same data and prompt: the CoLA loader with the same de-duplication, question, format instruction and expert
//     responses, and the same held-out rule (eval_size rows of the shuffled file, or an eval file; another RNG).
//  3. Same verifiers: cola_strict / cola_lenient as Python reward functions, transcribing LabelVerifier's regexes.
//  4. Same evaluation: a callback appends eval_sft_loss and eval_rewards/cola-{strict,lenient}/mean to log_history,
//     so the TRL run's trainer_state.json files feed `workbook report --from-trl OUT_DIR` (layout in TrlImport.cs).
// Heavy imports (torch, transformers, trl) happen inside main(), so the data and verifier functions load without
// them (the tests run those functions against the C# ones).
using System.Globalization;
using System.Text;
using System.Text.Json;
using Workbook.Data;
using Workbook.Training;

namespace Workbook.Experiments;

public static class RecipeExport
{
    static string Py(double x) =>
        x.ToString("R", CultureInfo.InvariantCulture) is var s && (s.Contains('.') || s.Contains('E'))
            ? s.Replace("E", "e")
            : s + ".0";

    static string Py(bool b) => b ? "True" : "False";

    static readonly JsonSerializerOptions Relaxed = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    static string Py(string s) => JsonSerializer.Serialize(s, Relaxed); // a JSON string literal is a Python one

    /// <summary>TrainingArguments keys shared by both stages, from the workbook's options.</summary>
    static List<(string Key, string Value)> Common(TrainOptions o, string dtype)
    {
        var l = new List<(string, string)> { ("learning_rate", Py(o.LearningRate)) };
        if (o.NumTrainEpochs is { } ep)
            l.Add(("num_train_epochs", Py(ep)));
        else
            l.Add(("max_steps", o.MaxSteps.ToString(CultureInfo.InvariantCulture)));
        l.Add(("warmup_ratio", Py(o.WarmupRatio)));
        l.Add(("lr_scheduler_type", Py(o.LrSchedulerType)));
        l.Add(("weight_decay", Py(o.WeightDecay)));
        l.Add(("adam_beta1", Py(o.AdamBeta1)));
        l.Add(("adam_beta2", Py(o.AdamBeta2)));
        l.Add(("adam_epsilon", Py(o.AdamEpsilon)));
        l.Add(("max_grad_norm", Py(o.MaxGradNorm)));
        l.Add(("logging_steps", o.LoggingSteps.ToString(CultureInfo.InvariantCulture)));
        if (o.SaveSteps > 0)
            l.Add(("save_steps", o.SaveSteps.ToString(CultureInfo.InvariantCulture)));
        l.Add(("save_total_limit", o.SaveTotalLimit.ToString(CultureInfo.InvariantCulture)));
        l.Add(("bf16", Py(dtype == "bf16")));
        l.Add(("report_to", Py("none")));
        return l;
    }

    public static List<(string Key, string Value)> SftArgs(ExperimentConfig c)
    {
        var s = c.Sft;
        var l = Common(s, c.Dtype);
        l.Add(("per_device_train_batch_size", s.PerDeviceTrainBatchSize.ToString(CultureInfo.InvariantCulture)));
        l.Add(("gradient_accumulation_steps", s.GradientAccumulationSteps.ToString(CultureInfo.InvariantCulture)));
        l.Add(("max_length", s.MaxLength.ToString(CultureInfo.InvariantCulture)));
        l.Add(("completion_only_loss", Py(s.CompletionOnlyLoss)));
        l.Add(("packing", Py(s.Packing)));
        return l;
    }

    public static List<(string Key, string Value)> GrpoArgs(ExperimentConfig c)
    {
        var g = c.Grpo;
        var l = Common(g, c.Dtype);
        l.Add(("per_device_train_batch_size", g.PerDeviceTrainBatchSize.ToString(CultureInfo.InvariantCulture)));
        l.Add(("num_generations", g.NumGenerations.ToString(CultureInfo.InvariantCulture)));
        l.Add(("max_completion_length", g.MaxCompletionLength.ToString(CultureInfo.InvariantCulture)));
        l.Add(("temperature", Py(g.Temperature)));
        l.Add(("top_p", Py(g.TopP)));
        l.Add(("top_k", g.TopK.ToString(CultureInfo.InvariantCulture)));
        l.Add(("beta", Py(g.Beta)));
        l.Add(("epsilon", Py(g.Epsilon)));
        if (g.EpsilonHigh is { } eh)
            l.Add(("epsilon_high", Py(eh)));
        l.Add(("num_iterations", g.NumIterations.ToString(CultureInfo.InvariantCulture)));
        l.Add(("scale_rewards", Py(g.ScaleRewards)));
        l.Add(("loss_type", Py(g.LossType)));
        l.Add(("mask_truncated_completions", Py(g.MaskTruncatedCompletions)));
        l.Add(("chat_template_kwargs", $"{{\"enable_thinking\": {Py(c.Task.EnableThinking)}}}"));
        return l;
    }

    static string Dict(string name, List<(string Key, string Value)> args)
    {
        var sb = new StringBuilder($"{name} = dict(\n");
        foreach (var (k, v) in args)
            sb.Append($"    {k}={v},\n");
        return sb.Append(")\n").ToString();
    }

    /// <summary>The script's text for an experiment config (CoLA datasets only).</summary>
    public static string Trl(ExperimentConfig c)
    {
        if (!c.Dataset.StartsWith("cola:"))
            throw new WorkbookException(
                $"export-recipe: dataset '{c.Dataset}' is not supported; the TRL recipe is written for cola:FILE (the "
                    + "paper's setting)"
            );
        var t = c.Task;
        var seeds = string.Join(
            ", ",
            Enumerable.Range(0, c.Seeds).Select(i => (c.SeedBase + i).ToString(CultureInfo.InvariantCulture))
        );
        int sftEval = Math.Max(1, (c.Sft.NumTrainEpochs is null ? c.Sft.MaxSteps : 0) / c.EvalsPerStage);
        int grpoEval = Math.Max(1, (c.Grpo.NumTrainEpochs is null ? c.Grpo.MaxSteps : 0) / c.EvalsPerStage);
        var sb = new StringBuilder();
        sb.Append(Header).Append('\n');
        sb.Append($"TRAIN_FILE = {Py(c.Dataset["cola:".Length..])}\n");
        sb.Append($"EVAL_FILE = {(t.EvalFile is null ? "None" : Py(t.EvalFile))}\n");
        sb.Append($"MODEL = {Py(c.Model ?? "Qwen/Qwen3-0.6B")}\n");
        sb.Append(
            $"DATASET_SEED = {c.DatasetSeed}\nTRAIN_SIZE = {t.TrainSize}  # 0 = every row\nEVAL_SIZE = {t.EvalSize}\n"
        );
        sb.Append(
            $"LOOSE_FORMAT_FRACTION = {Py(t.LooseFormatFraction)}\nFORMAT_INSTRUCTION = {Py(t.FormatInstruction)}\n"
        );
        sb.Append($"ENABLE_THINKING = {Py(t.EnableThinking)}\nSEEDS = [{seeds}]\n");
        sb.Append($"EVALS_PER_STAGE = {c.EvalsPerStage}\n");
        sb.Append($"QUESTION = {Py(GrammarTask.Question)}\nINSTRUCTION = {Py(FileTasks.Instruction)}\n\n");
        sb.Append(Dict("SFT_ARGS", SftArgs(c))).Append('\n');
        sb.Append(Dict("GRPO_ARGS", GrpoArgs(c))).Append('\n');
        sb.Append($"EVAL_MAX_NEW_TOKENS = {c.Grpo.MaxCompletionLength}\nEVAL_TEMPERATURE = {Py(c.Grpo.Temperature)}\n");
        sb.Append($"SFT_EVAL_EVERY = {sftEval}  # with max_steps; with num_train_epochs eval_every() computes it\n");
        sb.Append($"GRPO_EVAL_EVERY = {grpoEval}\n");
        sb.Append(Body);
        return sb.ToString();
    }

    /// <summary>Writes the script; an existing file is never overwritten.</summary>
    public static string Write(ExperimentConfig c, string outPath)
    {
        if (File.Exists(outPath))
            throw new WorkbookException(
                $"{outPath} exists; export-recipe never overwrites a file (choose another name)"
            );
        AtomicFile.WriteAllText(outPath, Trl(c));
        return outPath;
    }

    const string Header =
        """"
#!/usr/bin/env python3
# The Workbook experiment (arXiv 2601.07389: SFT and RL do not decouple) as a TRL script, written by
# `workbook export-recipe --engine trl`. Pipelines: sft-then-rl (SFT, then GRPO from its result) and rl-then-sft.
# Option names are TRL's (SFTConfig / GRPOConfig), with the workbook's values. Not carried over: dtype f32/bf16 maps to
# bf16; the workbook's gradient-alignment diagnostics and C1 estimate have no TRL counterpart.
# Differences to know: TRL's SFT on a conversational prompt-completion row puts Qwen3's empty think block into the
# completion (the workbook masks it); TRL samples on GPU (not bit-reproducible); the workbook's GRPO runs each
# group's prompt through the model once (shared_prompt_forward), TRL once per completion: the same function, rounded
# differently.
#
# Output layout, read by `workbook report --from-trl OUT`:
#   OUT/<pipeline>/seed-<seed>/<k>-<sft|grpo>/trainer_state.json   (log_history with TRL's metric names plus
#   eval_sft_loss and eval_rewards/cola-{strict,lenient}/mean from the CouplingEval callback)
#
# Usage: python recipe.py --out runs-trl [--model Qwen/Qwen3-0.6B] [--train-file FILE]
"""" // one line in the script, split here to fit 120 characters
        + """"
 [--pipelines sft-then-rl rl-then-sft]
import argparse
import csv
import json
import math
import os
import random
import re

"""";

    const string Body = """"


def load_cola(path):
    """CoLA rows (label, sentence): the raw 4-column format or 2 columns with the header 'sentence<TAB>label'.
    Exact-duplicate sentences are merged; sentences seen with both labels are dropped (as the workbook does)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) == 2 and fields[1].strip() == "label" and not rows:
                continue
            if len(fields) == 4:
                label, sentence = fields[1].strip(), fields[3]
            elif len(fields) == 2:
                label, sentence = fields[1].strip(), fields[0]
            else:
                raise ValueError(f"{path}:{n}: expected 4 or 2 tab-separated fields, got {len(fields)}")
            if label not in ("0", "1"):
                raise ValueError(f"{path}:{n}: label must be 0 or 1, got {label!r}")
            if not sentence.strip():
                raise ValueError(f"{path}:{n}: empty sentence")
            rows.append((int(label), sentence))
    if not rows:
        raise ValueError(f"{path}: no rows")
    labels = {}
    for label, sentence in rows:
        labels.setdefault(sentence.strip(), set()).add(label)
    seen, kept = set(), []
    for label, sentence in rows:
        key = sentence.strip()
        if len(labels[key]) > 1 or key in seen:
            continue
        seen.add(key)
        kept.append((label, sentence))
    return kept


def prompt_messages(sentence):
    question = f'{QUESTION} "{sentence}"'
    if FORMAT_INSTRUCTION == "user":
        return [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}]
    if FORMAT_INSTRUCTION == "system":
        return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": question}]
    return [{"role": "user", "content": question}]


def expert_response(label, rng):
    return f"The sentence is {label}." if rng.random() < LOOSE_FORMAT_FRACTION else f"Answer: {label}"


STRICT_LINE = re.compile(r"^Answer: (acceptable|unacceptable)$")
LABEL_WORD = re.compile(r"\b(unacceptable|acceptable)\b", re.IGNORECASE)


def strict_answer(text):
    """The final line must be exactly 'Answer: acceptable' or 'Answer: unacceptable' (the RL reward's parse)."""
    m = STRICT_LINE.match(text.rstrip("\n ").split("\n")[-1])
    return m.group(1) if m else None


def lenient_answer(text):
    """The last label word anywhere in the output (the paper's evaluation parse)."""
    found = LABEL_WORD.findall(text)
    return found[-1].lower() if found else None


def _text(completion):
    return completion[-1]["content"] if isinstance(completion, list) else completion


def cola_strict(completions, label, **kwargs):
    return [1.0 if strict_answer(_text(c)) == gold else 0.0 for c, gold in zip(completions, label)]


def cola_lenient(completions, label, **kwargs):
    return [1.0 if lenient_answer(_text(c)) == gold else 0.0 for c, gold in zip(completions, label)]


def build_rows():
    """(train, eval) lists of {prompt, completion, label} with the workbook's split rule."""
    rng = random.Random(DATASET_SEED)
    rows = load_cola(TRAIN_FILE)
    rng.shuffle(rows)

    def make(r):
        label = "acceptable" if r[0] == 1 else "unacceptable"
        return {"prompt": prompt_messages(r[1]),
                "completion": [{"role": "assistant", "content": expert_response(label, rng)}], "label": label}

    examples = [make(r) for r in rows]
    if EVAL_FILE:
        held = [make(r) for r in load_cola(EVAL_FILE)][:EVAL_SIZE]
        train = examples
    else:
        n = min(EVAL_SIZE, len(examples) // 5)
        held, train = examples[:n], examples[n:]
    return (train[:TRAIN_SIZE] if TRAIN_SIZE > 0 else train), held


def main():
    global TRAIN_FILE
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    class CouplingEval(TrainerCallback):
        """At the start and every `every` steps: the SFT loss on held-out expert responses (token mean over the
        completion) and the strict/lenient reward of sampled completions, appended to log_history."""

        def __init__(self, tokenizer, held, every):
            self.tok, self.held, self.every = tokenizer, held, max(1, every)

        def _prompt_text(self, row):
            return self.tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True,
                                                enable_thinking=ENABLE_THINKING)

        @torch.no_grad()
        def measure(self, model, state):
            was_training = model.training
            model.eval()
            nll, tokens = 0.0, 0
            for row in self.held:
                p = self._prompt_text(row)
                full = p + row["completion"][0]["content"] + self.tok.eos_token
                ids = self.tok(full, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
                n_prompt = len(self.tok(p, add_special_tokens=False).input_ids)
                logits = model(ids).logits[0, :-1].float()
                target = ids[0, 1:]
                lp = torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]
                nll -= lp[n_prompt - 1:].sum().item()
                tokens += target.shape[0] - (n_prompt - 1)
            strict, lenient = 0.0, 0.0
            self.tok.padding_side = "left"
            for i in range(0, len(self.held), 32):
                batch = self.held[i:i + 32]
                enc = self.tok([self._prompt_text(r) for r in batch], return_tensors="pt", padding=True,
                               add_special_tokens=False).to(model.device)
                out = model.generate(**enc, do_sample=True, temperature=EVAL_TEMPERATURE,
                                     max_new_tokens=EVAL_MAX_NEW_TOKENS, pad_token_id=self.tok.pad_token_id)
                texts = self.tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
                labels = [r["label"] for r in batch]
                strict += sum(cola_strict(texts, labels))
                lenient += sum(cola_lenient(texts, labels))
            state.log_history.append({
                "step": state.global_step, "epoch": state.epoch or 0.0,
                "eval_sft_loss": nll / max(1, tokens),
                "eval_rewards/cola-strict/mean": strict / len(self.held),
                "eval_rewards/cola-lenient/mean": lenient / len(self.held),
            })
            if was_training:
                model.train()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.measure(model, state)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % self.every == 0 or state.global_step == state.max_steps:
                self.measure(model, state)

    ap = argparse.ArgumentParser(description="The workbook's SFT/GRPO coupling experiment with TRL")
    ap.add_argument("--out", required=True, help="output folder (the layout `workbook report --from-trl` reads)")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--train-file", default=TRAIN_FILE)
    ap.add_argument("--pipelines", nargs="+", default=["sft-then-rl", "rl-then-sft"],
                    choices=["sft-then-rl", "rl-then-sft"])
    a = ap.parse_args()
    TRAIN_FILE = a.train_file
    train, held = build_rows()
    print(f"{len(train)} training rows, {len(held)} held out")
    tokenizer = AutoTokenizer.from_pretrained(a.model)

    def eval_every(kind, n_train):
        args = SFT_ARGS if kind == "sft" else GRPO_ARGS
        if "num_train_epochs" not in args:
            return SFT_EVAL_EVERY if kind == "sft" else GRPO_EVAL_EVERY
        per_step = args["per_device_train_batch_size"]
        if kind == "sft":
            per_step *= args["gradient_accumulation_steps"]
        else:
            per_step //= args["num_generations"]
        steps = math.ceil(args["num_train_epochs"] * math.ceil(n_train / per_step))
        return max(1, steps // EVALS_PER_STAGE)

    def run_stage(kind, model, out_dir, seed):
        os.makedirs(out_dir, exist_ok=False)
        callback = CouplingEval(tokenizer, held, eval_every(kind, len(train)))
        if kind == "sft":
            ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in train])
            trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=out_dir, seed=seed, **SFT_ARGS),
                                 train_dataset=ds, processing_class=tokenizer, callbacks=[callback])
        else:
            ds = Dataset.from_list([{"prompt": r["prompt"], "label": r["label"]} for r in train])
            trainer = GRPOTrainer(model=model, reward_funcs=[cola_strict],
                                  args=GRPOConfig(output_dir=out_dir, seed=seed, **GRPO_ARGS),
                                  train_dataset=ds, processing_class=tokenizer, callbacks=[callback])
        trainer.train()
        trainer.save_model(out_dir)
        trainer.save_state()
        return out_dir

    stages = {"sft-then-rl": ["sft", "grpo"], "rl-then-sft": ["grpo", "sft"]}
    for pipeline in a.pipelines:
        for seed in SEEDS:
            model = a.model
            for k, kind in enumerate(stages[pipeline]):
                model = run_stage(kind, model, os.path.join(a.out, pipeline, f"seed-{seed}", f"{k + 1}-{kind}"), seed)
    with open(os.path.join(a.out, "recipe.json"), "w") as f:
        json.dump({"sft": SFT_ARGS, "grpo": GRPO_ARGS, "seeds": SEEDS, "train_file": TRAIN_FILE}, f, indent=2)


if __name__ == "__main__":
    main()

"""";
}
