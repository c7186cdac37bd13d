// Batched autoregressive generation with the KV cache.
// - prompts of different lengths are left-padded; the attention mask hides the padding and position ids count real
// tokens  - one prefill pass, then one token per step through the cache (no re-running of the prefix)
//  - greedy (argmax, first index on ties) or sampling with temperature, top-k, top-p from a seeded torch.Generator
//  - sampling is by inverse CDF: one uniform per row from the Generator, then a float64 running sum over the row's
//    probabilities on the host. torch's multinomial draws an exponential for every vocabulary entry (~3 ms per row
//    at V=151936); this costs one pass. Same seed, same tokens across runs, but not the tokens multinomial drew.
//  - top-p sorts only when top_p < 1; without top-k/top-p the probabilities are exp(log_softmax), computed once
// - logprobs are those of the sampled token under softmax(logits / temperature), before top-k/top-p (as TRL computes
// them)
// - a sequence stops at an EOS id, at a stop string (checked on the decoded completion), or at max_new_tokens
// (truncated)
// - one row through a big float32 head: after the prefill the steps run on one torch thread and the head is split
//   over the threads there were (Qwen3ForCausalLM.StreamedLogits, Util/OneTorchThread.cs)
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Model;

public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 64;
    public bool Greedy { get; init; }
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; } // 0 = off
    public int[] EosTokenIds { get; init; } = [];
    public int PadTokenId { get; init; } = 151643;
    public string[] StopStrings { get; init; } = [];
    public long Seed { get; init; } = 0;

    /// <summary>Also record each token's entropy of softmax(logits / temperature), untruncated by top-k/top-p, in
    /// float64 (Completion.Entropies): the evaluator's eval_entropy without a second forward pass.</summary>
    public bool Entropies { get; init; }

    /// <summary>The one mapping from the sampling fields of the trainers, the evaluator and `generate` (TRL's names:
    /// max_completion_length or max_new_tokens, temperature, top_p, top_k) to generation options.</summary>
    public static GenerationOptions Sampling(
        int maxNewTokens,
        double temperature,
        double topP,
        int topK,
        int[] eosTokenIds,
        int padTokenId = 151643
    ) =>
        new()
        {
            MaxNewTokens = maxNewTokens,
            Temperature = temperature,
            TopP = topP,
            TopK = topK,
            EosTokenIds = eosTokenIds,
            PadTokenId = padTokenId,
        };

    public void Validate()
    {
        if (MaxNewTokens < 0)
            throw new WorkbookException($"max_new_tokens must be >= 0 (got {MaxNewTokens})");
        if (!Greedy && !(Temperature > 0))
            throw new WorkbookException($"temperature must be > 0 (got {Temperature}); use greedy for argmax decoding");
        if (!(TopP > 0 && TopP <= 1))
            throw new WorkbookException($"top_p must be in (0, 1] (got {TopP})");
        if (TopK < 0)
            throw new WorkbookException($"top_k must be >= 0 (got {TopK})");
    }
}

public sealed record Completion(int[] Tokens, float[] LogProbs, bool Truncated, string? StopReason)
{
    /// <summary>Per token, the entropy (nats) of the distribution it was drawn from; null unless
    /// GenerationOptions.Entropies.</summary>
    public double[]? Entropies { get; init; }
}

public static class Generation
{
    [ThreadStatic]
    static long oneRowSteps;

    /// <summary>Decoding steps this thread ran on one torch thread with a split head (for tests: that the path
    /// ran).</summary>
    public static long OneRowStepsOnThisThread => oneRowSteps;

    /// <param name="decode">turns completion tokens into text, needed only for stop strings</param>
    /// <param name="groupSize">rows come in groups of this many consecutive rows with the same prompt (GRPO's
    /// samples of one prompt): the prefill runs each group's prompt once and repeats its keys and values; the rows
    /// then sample apart as before</param>
    public static List<Completion> Generate(
        Qwen3ForCausalLM model,
        IReadOnlyList<int[]> prompts,
        GenerationOptions opt,
        Generator? rng = null,
        Func<int[], string>? decode = null,
        int groupSize = 1
    )
    {
        opt.Validate();
        if (prompts.Count == 0)
            return [];
        if (prompts.Any(p => p.Length == 0))
            throw new WorkbookException("every prompt needs at least one token");
        if (opt.StopStrings.Length > 0 && decode is null)
            throw new ArgumentException("stop strings need a decode function");
        int B = prompts.Count,
            P = prompts.Max(p => p.Length);
        int vocab = model.Config.VocabSize;
        foreach (var p in prompts)
        foreach (var id in p)
            if (id < 0 || id >= vocab)
                throw new WorkbookException($"token id {id} is outside the model's vocabulary [0, {vocab})");
        if (groupSize < 1 || B % groupSize != 0)
            throw new ArgumentException($"generation: {B} prompts are not groups of {groupSize}");
        for (int j = 0; j < B; j++)
            if (j % groupSize != 0 && !prompts[j].AsSpan().SequenceEqual(prompts[j - j % groupSize]))
                throw new ArgumentException($"generation: row {j}'s prompt differs from its group's first");
        var ownRng = rng is null && !opt.Greedy ? new Generator((ulong)opt.Seed) : null;
        rng ??= ownRng;

        var (ids, mask, _) = PromptPadding.LeftPad(prompts, opt.PadTokenId);
        var outTokens = Enumerable.Range(0, B).Select(_ => new List<int>()).ToArray();
        var outLogps = Enumerable.Range(0, B).Select(_ => new List<float>()).ToArray();
        var outEnt = opt.Entropies ? Enumerable.Range(0, B).Select(_ => new List<double>()).ToArray() : null;
        var done = new bool[B];
        var reason = new string?[B];
        var eos = opt.EosTokenIds.ToHashSet();

        bool wasTraining = model.training;
        model.eval();
        using var grad = no_grad();
        using var frozen = model.FreezeProjections(); // the weights do not change during the call
        long capacity = P + Math.Max(opt.MaxNewTokens, 1);
        // the prefill runs one row per group (its prompt); the cache is repeated for the group's rows after it
        int Bp = B / groupSize;
        var cache = model.NewCache(Bp, capacity);
        Tensor maskT = tensor(mask, [B, P], dtype: ScalarType.Int64).DetachFromDisposeScope();
        Tensor next = tensor(ids, [B, P], dtype: ScalarType.Int64).DetachFromDisposeScope();
        // one row through a streamed float32 head: after the prefill, each step's operations are too small for
        // OpenMP, whose spinning workers also hold the cores the head's blocks need (README, "One-row decoding"): the
        // steps run on one torch thread and the head is split over the threads this thread had
        int headThreads = get_num_threads();
        bool oneRow = B == 1 && model.StreamsHead && model.Device.type == DeviceType.CPU && headThreads > 1;
        OneTorchThread? single = null;
        try
        {
            for (int step = 0; step < opt.MaxNewTokens; step++)
            {
                if (step == 1 && oneRow)
                    single = OneTorchThread.OnThisThread();
                if (single is not null)
                    oneRowSteps++;
                long[] chosen;
                float[] logps;
                double[]? ent = null;
                using (var scope = NewDisposeScope())
                {
                    Tensor logits;
                    if (step == 0 && groupSize > 1)
                    {
                        Tensor First(Tensor t) => t.reshape(Bp, groupSize, P).select(1, 0);
                        logits = model
                            .Forward(First(next), First(maskT), cache: cache, lastOnly: true)
                            .repeat_interleave(groupSize, dim: 0);
                        var full = cache.RepeatRows(groupSize);
                        cache.Dispose();
                        cache = full;
                    }
                    else
                        logits = model.Forward(next, maskT, cache: cache, lastOnly: true, headThreads: headThreads);
                    logits = logits.to(ScalarType.Float32).cpu(); // [B, V]
                    (chosen, logps) = Pick(logits, opt, rng);
                    if (outEnt is not null)
                    {
                        // as Forgetting.Entropy computes it: float64 log-softmax of logits / temperature
                        var lp = logits.to(ScalarType.Float64).Over(opt.Temperature).log_softmax(-1);
                        ent = (-(lp.exp() * lp).sum(-1)).data<double>().ToArray();
                    }
                }
                for (int b = 0; b < B; b++)
                {
                    if (done[b])
                    {
                        chosen[b] = opt.PadTokenId;
                        continue;
                    }
                    outTokens[b].Add((int)chosen[b]);
                    outLogps[b].Add(logps[b]);
                    outEnt?[b].Add(ent![b]);
                    if (eos.Contains((int)chosen[b]))
                    {
                        done[b] = true;
                        reason[b] = "eos";
                    }
                    else if (opt.StopStrings.Length > 0)
                    {
                        var text = decode!(outTokens[b].ToArray());
                        if (opt.StopStrings.Any(text.Contains))
                        {
                            done[b] = true;
                            reason[b] = "stop_string";
                        }
                    }
                }
                if (done.All(d => d))
                    break;
                using var column = ones(B, 1, dtype: ScalarType.Int64); // held: no scope here, see HeldScalars
                var newMask = cat([maskT, column], 1).DetachFromDisposeScope();
                maskT.Dispose();
                maskT = newMask;
                next.Dispose();
                next = tensor(chosen, [B, 1], dtype: ScalarType.Int64).DetachFromDisposeScope();
            }
        }
        finally
        {
            single?.Dispose();
            cache.Dispose();
            maskT.Dispose();
            next.Dispose();
            ownRng?.Dispose();
            if (wasTraining)
                model.train();
        }
        return Enumerable
            .Range(0, B)
            .Select(b => new Completion(outTokens[b].ToArray(), outLogps[b].ToArray(), !done[b], reason[b])
            {
                Entropies = outEnt?[b].ToArray(),
            })
            .ToList();
    }

    /// <summary>Chooses one token per row of float32 logits [B, V]; returns the ids and their
    /// log-probabilities.</summary>
    public static (long[] ids, float[] logps) Pick(Tensor logits, GenerationOptions opt, Generator? rng)
    {
        using var scope = NewDisposeScope();
        int B = (int)logits.size(0),
            V = (int)logits.size(1);
        using Scalar temperature = opt.Temperature,
            topPMass = opt.TopP; // named, so the GC cannot finalize them mid-call
        var scaled = opt.Greedy || opt.Temperature == 1.0 ? logits : logits / temperature;
        var logp = scaled.log_softmax(-1);
        long[] ids;
        if (opt.Greedy)
            ids = logits.argmax(-1).data<long>().ToArray();
        else
        {
            Tensor probs;
            bool topK = opt.TopK > 0 && opt.TopK < V,
                topP = opt.TopP < 1.0;
            if (!topK && !topP)
                probs = logp.exp(); // softmax(scaled), reusing the log-softmax
            else
            {
                var filtered = scaled;
                using Scalar minusInf = float.NegativeInfinity; // named, so the GC cannot finalize it mid-call
                if (topK)
                {
                    var kth = filtered.topk(opt.TopK, -1).values.narrow(-1, opt.TopK - 1, 1);
                    filtered = filtered.masked_fill(filtered.lt(kth), minusInf);
                }
                if (topP)
                {
                    var (sorted, idx) = filtered.sort(-1, descending: true);
                    var sp = sorted.softmax(-1);
                    var before = sp.cumsum(-1) - sp; // mass strictly above each token
                    var drop = before.gt(topPMass); // keep the smallest prefix whose mass reaches top_p
                    var dropOrig = zeros_like(drop).scatter(-1, idx, drop);
                    filtered = filtered.masked_fill(dropOrig, minusInf);
                }
                probs = filtered.softmax(-1);
            }
            var u = rand([B], dtype: ScalarType.Float64, generator: rng).data<double>().ToArray();
            var pc = probs.contiguous(); // read in place: a managed copy of [B, V] cost more than the sampling
            ids = SampleInverseCdf(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(pc.bytes), B, V, u);
        }
        using var chosen = tensor(ids, [B, 1], dtype: ScalarType.Int64);
        var lp = logp.gather(-1, chosen).squeeze(-1);
        return (ids, lp.data<float>().ToArray());
    }

    /// <summary>Row b's token is the first index whose running probability sum exceeds u[b] times the row's total
    /// (float64 sums, so rounding in float32 probabilities cannot bias the tail). Zero-probability entries never
    /// raise the running sum, so they are never chosen.</summary>
    public static long[] SampleInverseCdf(ReadOnlySpan<float> probs, int rows, int vocab, IReadOnlyList<double> u)
    {
        var ids = new long[rows];
        for (int b = 0; b < rows; b++)
        {
            var row = probs.Slice(b * vocab, vocab);
            double total = 0;
            foreach (var p in row)
                total += p;
            if (!(total > 0) || double.IsInfinity(total))
                throw new WorkbookException(
                    $"sampling: row {b} has no finite probability mass (logits all -inf or NaN)"
                );
            double target = u[b] * total,
                cum = 0;
            int pick = -1;
            for (int v = 0; v < vocab; v++)
            {
                if (row[v] <= 0)
                    continue;
                pick = v;
                cum += row[v];
                if (cum > target)
                    break;
            }
            ids[b] = pick; // rounding at the very top ends on the last token with mass
        }
        return ids;
    }
}
