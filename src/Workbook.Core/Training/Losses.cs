// Shared loss pieces. SFT: token-mean cross-entropy over the loss-masked tokens (the assistant's reply and its
// <|im_end|>), with right padding, or packing into rows with per-example segments and restarting positions.
// Policy: per-token log-probabilities (and entropies) of completion tokens, from logits divided by the sampling
// temperature, as TRL computes them.
// Shared prefixes (Model/SharedPrefix.cs): the columns every row of an SFT batch opens with (chat template, question)
// and each GRPO group's prompt go through the model once; the same function as the per-row forward, rounded
// differently.
using Workbook.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Workbook.Training;

public static class Losses
{
    /// <summary>A padded (or packed) batch: ids, attention mask, position ids, optional segments, targets and loss
    /// mask.</summary>
    public sealed record Batch(
        Tensor Ids,
        Tensor Mask,
        Tensor Positions,
        Tensor? Segments,
        Tensor Targets,
        Tensor LossMask,
        long Tokens
    )
    {
        /// <summary>K: the first K columns hold the same real tokens in every row (the chat template's opening and
        /// the task's question), so the forward runs them once (0 = no shared run).</summary>
        public int CommonPrefix { get; init; }
    }

    /// <summary>Shortest common prefix worth a pass of its own: shorter ones cost more in two passes' launches than
    /// they save.</summary>
    public const int MinCommonPrefix = 4;

    /// <summary>Tokens of one sequence that carry loss in <see cref="MakeSftBatch"/>: the targets (positions 1..) the
    /// loss mask marks, after truncation to <paramref name="maxLength"/>.</summary>
    public static long LossTokens(SftSequence s, int maxLength)
    {
        long n = 0;
        for (int j = 1; j < Math.Min(s.LossMask.Length, maxLength); j++)
            if (s.LossMask[j])
                n++;
        return n;
    }

    public static Batch MakeSftBatch(IReadOnlyList<SftSequence> seqs, int padId, int maxLength, bool packing)
    {
        var rows = new List<List<(int[] ids, bool[] m)>>();
        foreach (var s in seqs)
        {
            var ids = s.Ids.Length > maxLength ? s.Ids[..maxLength] : s.Ids; // truncation_mode keep_start
            var m = s.LossMask.Length > maxLength ? s.LossMask[..maxLength] : s.LossMask;
            if (packing && rows.Count > 0 && rows[^1].Sum(x => x.ids.Length) + ids.Length <= maxLength)
                rows[^1].Add((ids, m));
            else
                rows.Add([(ids, m)]);
        }
        int B = rows.Count,
            T = rows.Max(r => r.Sum(x => x.ids.Length));
        var ids_ = new long[B * T];
        var mask = new long[B * T];
        var pos = new long[B * T];
        var seg = new long[B * T];
        var tgt = new long[B * T];
        var lm = new float[B * T];
        long tokens = seqs.Sum(s => LossTokens(s, maxLength));
        for (int b = 0; b < B; b++)
        {
            int t = 0,
                segment = 1;
            foreach (var (ids, m) in rows[b])
            {
                for (int i = 0; i < ids.Length; i++, t++)
                {
                    ids_[b * T + t] = ids[i];
                    mask[b * T + t] = 1;
                    pos[b * T + t] = i;
                    seg[b * T + t] = segment;
                    if (i + 1 < ids.Length)
                    {
                        tgt[b * T + t] = ids[i + 1];
                        if (m[i + 1])
                            lm[b * T + t] = 1;
                    }
                }
                segment++;
            }
            for (; t < T; t++)
            {
                ids_[b * T + t] = padId;
                tgt[b * T + t] = padId;
            }
        }
        // the rows' common prefix (packed rows hold several sequences, so only unpacked ones); one column at least
        // is left to the rows' own pass
        int common = 0;
        if (!packing && B > 1)
        {
            int limit = Math.Min(T - 1, rows.Min(r => r[0].ids.Length));
            while (common < limit && rows.All(r => r[0].ids[common] == rows[0][0].ids[common]))
                common++;
        }
        return new Batch(
            tensor(ids_, [B, T]),
            tensor(mask, [B, T]),
            tensor(pos, [B, T]),
            packing ? tensor(seg, [B, T]) : null,
            tensor(tgt, [B, T]),
            tensor(lm, [B, T]),
            tokens
        )
        {
            CommonPrefix = common >= MinCommonPrefix ? common : 0,
        };
    }

    /// <summary>Summed NLL over loss-masked tokens and the number of correct argmax predictions among them.</summary>
    public static (Tensor NllSum, Tensor Correct) SftNll(Qwen3ForCausalLM model, Batch b)
    {
        using var scope = NewDisposeScope();
        var (s, c) = SftNll(Logits(model, b), b);
        return (s.MoveToOuterDisposeScope(), c.MoveToOuterDisposeScope());
    }

    static Tensor Logits(Qwen3ForCausalLM model, Batch b)
    {
        var dev = model.Device;
        if (b.CommonPrefix > 0 && b.Segments is null)
            return CommonPrefixLogits(model, b.Ids.to(dev), b.Mask.to(dev), b.Positions.to(dev), b.CommonPrefix);
        return model.Forward(b.Ids.to(dev), b.Mask.to(dev), b.Positions.to(dev), segmentIds: b.Segments?.to(dev));
    }

    /// <summary>The logits of a batch whose first K columns are the same in every row, [B, T, V]: those columns run
    /// once, as a prompt shared by a group of B rows (Model/SharedPrefix.cs); their logits are repeated for every
    /// row. The same function as one forward over the rows.</summary>
    static Tensor CommonPrefixLogits(Qwen3ForCausalLM model, Tensor ids, Tensor mask, Tensor positions, int K)
    {
        using var scope = NewDisposeScope();
        long B = ids.shape[0],
            T = ids.shape[1];
        Tensor First(Tensor t) => t.narrow(0, 0, 1).narrow(1, 0, K);
        var (hp, hs) = SharedPrefix.HiddenStates( // [1, K, H] and [B, T − K, H]
            model,
            (int)B,
            (First(ids), First(mask), First(positions)),
            (ids.narrow(1, K, T - K), mask, positions.narrow(1, K, T - K))
        );
        var lp = model.Logits(hp);
        return cat([lp.expand(B, K, lp.shape[2]), model.Logits(hs)], 1).MoveToOuterDisposeScope();
    }

    /// <summary><see cref="SftNll(Qwen3ForCausalLM, Batch)"/> from the batch's logits.</summary>
    static (Tensor NllSum, Tensor Correct) SftNll(Tensor logits, Batch b)
    {
        using var scope = NewDisposeScope();
        var dev = logits.device;
        if (logits.dtype != ScalarType.Float64)
            logits = logits.to(ScalarType.Float32);
        var logp = logits.log_softmax(-1);
        var tgt = b.Targets.to(dev);
        var lm = b.LossMask.to(dev).to(logits.dtype);
        var nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1);
        var correct = (logits.argmax(-1).eq(tgt).to(logits.dtype) * lm).sum();
        return ((nll * lm).sum().MoveToOuterDisposeScope(), correct.MoveToOuterDisposeScope());
    }

    /// <summary>Per-position NLL of the next token where the loss mask is set (0 elsewhere), [B, T] on the CPU,
    /// float64.</summary>
    public static Tensor TokenNll(Qwen3ForCausalLM model, Batch b)
    {
        using var scope = NewDisposeScope();
        return TokenNll(Logits(model, b), b).MoveToOuterDisposeScope();
    }

    static Tensor TokenNll(Tensor logits, Batch b)
    {
        using var scope = NewDisposeScope();
        var dev = logits.device;
        var logp = logits.to(ScalarType.Float64).log_softmax(-1);
        var nll =
            -logp.gather(-1, b.Targets.to(dev).unsqueeze(-1)).squeeze(-1) * b.LossMask.to(dev).to(ScalarType.Float64);
        return nll.cpu().MoveToOuterDisposeScope();
    }

    /// <summary>The most bytes one evaluation forward's logits would take in float64 (EvaluateSft's rows per forward;
    /// the float32 logits are half of it, and the loss split's float64 log-softmax holds two such tensors at once): a
    /// full 151,936-token vocabulary takes a few rows at a time (a 0.6B model's evaluation peaked 4 GB above its
    /// training with 32), a compact one the whole batch, as before.</summary>
    public const long EvalLogitsBytes = 256L << 20;

    /// <summary>Rows per forward for sequences of up to <paramref name="length"/> tokens: at most
    /// <paramref name="batchSize"/>, and [rows, length, vocab] float64 within <see cref="EvalLogitsBytes"/> (at
    /// least one row).</summary>
    public static int EvalRows(long length, long vocab, int batchSize) =>
        RowsWithin(EvalLogitsBytes, Math.Max(1, length) * vocab * sizeof(double), batchSize);

    /// <summary>Rows per call when each row takes <paramref name="bytesPerRow"/>: as many as fit in
    /// <paramref name="budget"/>, at most <paramref name="batchSize"/> and at least one. The evaluations' memory bounds
    /// (logits here and in Forgetting.cs, KV caches in Evaluator.cs) all split their batches this way.</summary>
    public static int RowsWithin(long budget, long bytesPerRow, int batchSize) =>
        (int)Math.Clamp(budget / Math.Max(1, bytesPerRow), 1, Math.Max(1, batchSize));

    /// <summary>Mean SFT loss (per token) over a set of sequences, without gradients. <paramref name="tokenNll"/>, if
    /// given, gets each batch's first index and its <see cref="TokenNll(Qwen3ForCausalLM, Batch)"/> from the same
    /// forward. A batch has at most <paramref name="batchSize"/> rows, fewer when its logits would exceed
    /// <see cref="EvalLogitsBytes"/> (<see cref="EvalRows"/>).</summary>
    public static (double Loss, double Accuracy, long Tokens, double NllPerSequence) EvaluateSft(
        Qwen3ForCausalLM model,
        IReadOnlyList<SftSequence> seqs,
        int padId,
        int maxLength,
        int batchSize = 32,
        Action<int, Tensor>? tokenNll = null
    )
    {
        bool wasTraining = model.training;
        model.eval();
        double nll = 0,
            correct = 0;
        long tokens = 0;
        int rows = EvalRows(
            Math.Min(maxLength, seqs.Count == 0 ? 1 : seqs.Max(q => q.Ids.Length)),
            model.Config.VocabSize,
            batchSize
        );
        using (no_grad())
            for (int i = 0; i < seqs.Count; i += rows)
            {
                using var scope = NewDisposeScope();
                var b = MakeSftBatch(seqs.Skip(i).Take(rows).ToList(), padId, maxLength, packing: false);
                var logits = Logits(model, b);
                var (s, c) = SftNll(logits, b);
                nll += s.Value();
                correct += c.Value();
                tokens += b.Tokens;
                tokenNll?.Invoke(i, TokenNll(logits, b)); // one forward for the loss and its split
            }
        if (wasTraining)
            model.train();
        return (
            tokens > 0 ? nll / tokens : double.NaN,
            tokens > 0 ? correct / tokens : double.NaN,
            tokens,
            seqs.Count > 0 ? nll / seqs.Count : double.NaN
        );
    }

    /// <summary>Log-probabilities and entropies of the completion tokens ids[:, P:] (given ids[:, :P] as left-padded
    /// prompts). The entropies carry no gradient (null with <paramref name="entropy"/> false). With
    /// <paramref name="groupSize"/> G &gt; 1, rows come in groups of G consecutive rows with the same prompt, and each
    /// group's prompt goes through the model once (Model/SharedPrefix.cs); a group whose prompts differ is an
    /// error.</summary>
    public static (Tensor LogProbs, Tensor? Entropy) CompletionLogProbs(
        Qwen3ForCausalLM model,
        Tensor ids,
        Tensor mask,
        int promptLength,
        double temperature,
        bool entropy = true,
        int groupSize = 1
    )
    {
        using var scope = NewDisposeScope();
        var dev = model.Device;
        long L = ids.shape[1],
            C = L - promptLength;
        var tok = ids.to(dev).narrow(1, promptLength, C);
        if (model.FusesLogProbs) // a big tied head in a training forward: no [N, C, V] tensors (Model/LogProbHead.cs)
        {
            var h =
                groupSize > 1
                    ? SharedPromptHidden(model, ids.to(dev), mask.to(dev), promptLength, groupSize)
                    : model.HiddenStates(ids.to(dev), mask.to(dev)).narrow(1, promptLength - 1, C);
            var (fused, fusedEntropy) = model.FusedLogProbs(h, tok, temperature, entropy);
            return (fused.MoveToOuterDisposeScope(), fusedEntropy?.MoveToOuterDisposeScope());
        }
        var logits =
            groupSize > 1
                ? model.Logits(SharedPromptHidden(model, ids.to(dev), mask.to(dev), promptLength, groupSize))
                : model.Forward(ids.to(dev), mask.to(dev)).narrow(1, promptLength - 1, C);
        if (logits.dtype != ScalarType.Float64)
            logits = logits.to(ScalarType.Float32);
        if (temperature != 1.0) // x / 1 is x: the division would only copy
            using (TorchSharp.Scalar t = temperature) // named, so the GC cannot finalize it mid-call
                logits = logits / t;
        var logp = logits.log_softmax(-1);
        var lp = logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1);
        if (!entropy)
            return (lp.MoveToOuterDisposeScope(), null);
        // a metric only: outside the graph, so autograd neither records nor keeps its [N, C, V] temporaries
        using var _ = no_grad();
        var ent = -(logp.exp() * logp).sum(-1);
        return (lp.MoveToOuterDisposeScope(), ent.MoveToOuterDisposeScope());
    }

    /// <summary>The final hidden states that predict ids[:, P:], [N, C, hidden], with each group's prompt run once.
    /// </summary>
    static Tensor SharedPromptHidden(Qwen3ForCausalLM model, Tensor ids, Tensor mask, int P, int G)
    {
        long N = ids.shape[0],
            C = ids.shape[1] - P;
        if (N % G != 0)
            throw new ArgumentException($"shared prompt forward: {N} rows are not groups of {G}");
        var prompts = ids.narrow(1, 0, P).reshape(N / G, G, P);
        var promptMask = mask.narrow(1, 0, P).reshape(N / G, G, P);
        using (no_grad())
            if (
                !prompts.eq(prompts.narrow(1, 0, 1)).all().item<bool>()
                || !promptMask.eq(promptMask.narrow(1, 0, 1)).all().item<bool>()
            )
                throw new ArgumentException($"shared prompt forward: a group of {G} rows has more than one prompt");
        var (hp, hc) = SharedPrefix.HiddenStates( // [N/G, P, H] and [N, C, H]
            model,
            G,
            (prompts.select(1, 0), promptMask.select(1, 0), null),
            (ids.narrow(1, P, C), mask, null)
        );
        // position P − 1 (the prompt's last token) predicts the first completion token; completion t predicts t + 1
        var first = hp.narrow(1, P - 1, 1).repeat_interleave(G, dim: 0);
        return C > 1 ? cat([first, hc.narrow(1, 0, C - 1)], 1) : first;
    }
}
