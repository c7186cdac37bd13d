// Supervised fine-tuning. Choices, as TRL's SFTTrainer makes them:
//  1. loss = cross-entropy on the assistant's reply tokens only (completion_only_loss), token-mean over the whole
// optimizer step (all micro-batches of the gradient accumulation together), padding and prompt tokens carry no loss;
//  2. right padding, or packing of several examples per row with attention kept inside each example;
//  3. AdamW, linear/cosine schedule with warmup, global-norm clipping.
// Logged per step: loss, mean_token_accuracy, num_tokens, grad_norm, learning_rate; eval_sft_loss on the held-out set.
using Workbook.Data;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Training;

public sealed class SftTrainer : TrainerBase<SftOptions>
{
    readonly Codec codec;
    readonly List<SftSequence> data;

    protected override string TrainerName => "sft";
    protected override int DatasetSize => data.Count;

    public SftTrainer(
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> train,
        SftOptions options,
        string outDir,
        Evaluator? evaluator = null
    )
        : base(model, options, outDir, evaluator)
    {
        this.codec = codec;
        data = train.Select(e => codec.Sft(e, options.CompletionOnlyLoss)).ToList();
    }

    protected override (string Option, long Rows, long Length, string Remedy)? StepShape =>
        (
            "per_device_train_batch_size",
            Opt.PerDeviceTrainBatchSize,
            Math.Min(Opt.MaxLength, data.Count == 0 ? 0 : data.Max(d => d.Ids.Length)),
            "gradient_accumulation_steps keeps the effective batch"
        );

    protected override Dictionary<string, double> TrainStep(long step, double lr)
    {
        Optimizer.ZeroGrad();
        // the rows of every micro-batch first (indices only), so that one micro-batch's tensors live at a time: the
        // token count that normalises the loss is known before the first backward
        var picks = Enumerable
            .Range(0, Opt.GradientAccumulationSteps)
            .Select(_ => Order.Next(Opt.PerDeviceTrainBatchSize))
            .ToList();
        Losses.Batch Make(int[] rows) =>
            Losses.MakeSftBatch(rows.Select(i => data[i]).ToList(), codec.PadId, Opt.MaxLength, Opt.Packing);
        long tokens = picks.Sum(rows => rows.Sum(i => Losses.LossTokens(data[i], Opt.MaxLength))),
            seen = 0;
        if (tokens == 0)
            throw new WorkbookException(
                $"step {step + 1}: the batch has no loss tokens (are the responses empty or truncated away by "
                    + $"max_length {Opt.MaxLength}?)"
            );
        double nll = 0,
            correct = 0;
        foreach (var rows in picks)
        {
            using var scope = NewDisposeScope();
            using var forBackward = Model.ForBackward();
            var b = Make(rows);
            var (s, c) = Losses.SftNll(Model, b);
            s.Over(tokens).backward(); // token-mean over the whole accumulated step
            nll += s.Value();
            correct += c.Value();
            seen += b.Mask.sum().item<long>();
        }
        var loss = nll / tokens;
        var gn = Update(lr, loss, step);
        State = State with { NumTokens = State.NumTokens + seen };
        return new Dictionary<string, double>
        {
            ["loss"] = loss,
            ["grad_norm"] = gn,
            ["mean_token_accuracy"] = correct / tokens,
            ["num_tokens"] = State.NumTokens,
        };
    }
}
