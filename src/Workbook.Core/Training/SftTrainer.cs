// Supervised fine-tuning. Choices, as TRL's SFTTrainer makes them:
//  1. loss = cross-entropy on the assistant's reply tokens only (completion_only_loss), token-mean over the whole
//     optimizer step (all micro-batches of the gradient accumulation together), padding and prompt tokens carry no loss;
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

    protected override Dictionary<string, double> TrainStep(long step, double lr)
    {
        Optimizer.ZeroGrad();
        var micro = Enumerable
            .Range(0, Opt.GradientAccumulationSteps)
            .Select(_ =>
                Losses.MakeSftBatch(
                    Order.Next(Opt.PerDeviceTrainBatchSize).Select(i => data[i]).ToList(),
                    codec.PadId,
                    Opt.MaxLength,
                    Opt.Packing
                )
            )
            .ToList();
        long tokens = micro.Sum(b => b.Tokens);
        if (tokens == 0)
            throw new WorkbookException(
                $"step {step + 1}: the batch has no loss tokens (are the responses empty or truncated away by max_length {Opt.MaxLength}?)"
            );
        double nll = 0,
            correct = 0;
        foreach (var b in micro)
        {
            var (s, c) = Losses.SftNll(Model, b);
            (s / tokens).backward(); // token-mean over the whole accumulated step
            nll += s.Value();
            correct += c.Value();
        }
        var loss = nll / tokens;
        var gn = Update(lr, loss, step);
        State = State with { NumTokens = State.NumTokens + micro.Sum(b => b.Mask.sum().item<long>()) };
        return new Dictionary<string, double>
        {
            ["loss"] = loss,
            ["grad_norm"] = gn,
            ["mean_token_accuracy"] = correct / tokens,
            ["num_tokens"] = State.NumTokens,
        };
    }
}
