// Speed is measured here, never in unit tests. Definitions are the peer harness's (../shared/perf/README.md), so the
// numbers compare side by side with tuned PyTorch:
//  1. peak: a 2048x2048 GEMM in the compute dtype into a preallocated output (the peer's torch.mm with out=; 3
//     untimed, median of 15) in this process, and a stated machine peak
//     (tuned PyTorch's 2048^2 GEMM on this machine type, or --machine-peak); MFU is reported against both.
//  2. train: exactly batch x seq tokens per step (ids [B, T+1], inputs T, next-token targets); zero_grad, forward,
//     cross-entropy on f32 logits, backward, AdamW (lr 1e-4, weight decay 0.1), no clipping. FLOPs per token
//     ("with head") 6·(layer-matmul params + V·d) + 12·L·T·(heads·head_dim).
//  3. generate: random prompt of 32 tokens, 128 new, greedy, end to end (prefill + 127 decode steps):
//     B·128 / total seconds, at batch 1 and 8; sampling (temperature 1, top-p 1) at batch 8, as GRPO rolls out,
//     against greedy in alternating pairs on the same prompts; the per-token latency at position 32 vs 512.
//  4. grpo: one GRPO step split into rollout (generation) and update; tokenizer: encode speed.
using System.Diagnostics;
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Bench;

public static class Benchmarks
{
    /// <summary>The default stated machine peak: tuned PyTorch's 2048^2 GEMM of this dtype (PyTorch 1.13, OpenBLAS for
    /// f32, oneDNN for bf16; `../shared/perf/peer.sh gemm`) on the project's machine kind that this CPU's flags match,
    /// or null (no kind matches, or bf16 where PyTorch has no fast path). A peak measured on the other kind would be
    /// off by 7x, so the kind is read from the flags, never assumed.</summary>
    public static (double? Gflops, string Source) StatedMachinePeak(ScalarType dtype) =>
        StatedMachinePeak(dtype, Devices.CpuInfo("flags"));

    /// <summary><see cref="StatedMachinePeak(ScalarType)"/> from a /proc/cpuinfo "flags" value (null: not
    /// known).</summary>
    public static (double? Gflops, string Source) StatedMachinePeak(ScalarType dtype, string? cpuFlags)
    {
        var flags = (cpuFlags ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        bool bf16 = dtype == ScalarType.BFloat16;
        if (flags.Contains("avx512f"))
            return (
                bf16 ? 976 : 503,
                "tuned PyTorch 2048^2 GEMM on the 2-core AMD EPYC with AVX-512: f32 503, bf16 976 GFLOP/s "
                    + "(shared/perf/README.md)"
            );
        if (flags.Contains("avx2") && !bf16)
            return (
                74,
                "tuned PyTorch 2048^2 f32 GEMM on the 2-core AMD EPYC with AVX2 and no AVX-512: 74 GFLOP/s "
                    + "(peer.sh gemm, 5 processes, medians 74.0-74.7, 2026-12-05)"
            );
        return (
            null,
            flags.Contains("avx2")
                ? "none: no stated bf16 peak on a CPU without AVX-512 (PyTorch has no fast bf16 GEMM there); "
                    + "pass --machine-peak"
                : "none: this CPU matches no measured machine kind; pass --machine-peak"
        );
    }

    static double Median(IEnumerable<double> xs)
    {
        var a = xs.Order().ToArray();
        return a.Length == 0 ? double.NaN
            : a.Length % 2 == 1 ? a[a.Length / 2]
            : 0.5 * (a[a.Length / 2 - 1] + a[a.Length / 2]);
    }

    /// <summary>The peer's GEMM peak (torch.mm with out=): an n x n product into a preallocated output (addmm_ with
    /// beta 0, which is what mm's out= variant calls), 3 untimed, then the median of <paramref name="repeats"/>. A
    /// new output per product (`a.mm(b)` in a loop, the definition before 2026-12-06) measured page faults too: under
    /// the workbook's malloc setting a freed 16 MiB block often does not fit the next 64-byte-aligned request
    /// (posix_memalign asks for the block plus the alignment's slack), so in a fresh process about every other
    /// output landed on never-touched pages (4,096 faults, about 40% of that product's time) until the heap
    /// settled.</summary>
    public static double GemmPeakGflops(ScalarType dtype, int n = 2048, int repeats = 15)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(0);
        var a = randn([n, n], generator: g).to(dtype);
        var b = randn([n, n], generator: g).to(dtype);
        var c = empty([n, n], dtype);
        for (int i = 0; i < 3; i++)
            c.addmm_(a, b, beta: 0f, alpha: 1f); // warm-up
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            c.addmm_(a, b, beta: 0f, alpha: 1f);
            times.Add(sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / Median(times) / 1e9;
    }

    public static double TrainFlopsPerToken(Qwen3Config c, int seqLen)
    {
        long d = c.HiddenSize,
            qd = (long)c.NumAttentionHeads * c.HeadDim,
            kvd = (long)c.NumKeyValueHeads * c.HeadDim;
        long layerMatmul = c.NumHiddenLayers * (d * qd + 2 * d * kvd + qd * d + 3 * d * c.IntermediateSize);
        return 6.0 * (layerMatmul + (long)c.VocabSize * d) + 12.0 * c.NumHiddenLayers * seqLen * qd;
    }

    static long Rss()
    {
        using var p = Process.GetCurrentProcess();
        p.Refresh();
        return p.WorkingSet64;
    }

    /// <summary>Peak resident set of this process so far (VmHWM), in bytes; 0 where /proc is absent.</summary>
    public static long PeakRss()
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:"));
            // "VmHWM:\t123 kB"
            return line is null
                ? 0
                : long.Parse(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    public static Dictionary<string, object> Train(
        Qwen3Config cfg,
        ScalarType dtype,
        int batch,
        int seqLen,
        int steps,
        int memorySteps,
        double? machinePeak,
        int warmup = 3,
        double clip = 0
    )
    {
        var r = new Dictionary<string, object>();
        double peak = GemmPeakGflops(dtype);
        r["gemm_peak_gflops"] = peak;
        using var model = new Qwen3ForCausalLM(cfg, dtype, CPU, seed: 1);
        var opt = new AdamW(model.named_parameters(), weightDecay: 0.1);
        var gen = new Generator(7);
        model.train();
        var split = new List<(double fwd, double bwd, double opt)>();
        double Step()
        {
            Memory.AfterTrainingStep(model.ParameterCount()); // after the previous step, as the trainers do; not timed
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            var ids = randint(0, cfg.VocabSize, [batch, seqLen + 1], generator: gen);
            opt.ZeroGrad();
            double t1,
                t2;
            using (model.ForBackward())
            {
                var logits = model.Forward(ids.narrow(1, 0, seqLen)).to(ScalarType.Float32);
                var loss = nn.functional.cross_entropy(
                    logits.reshape(-1, cfg.VocabSize),
                    ids.narrow(1, 1, seqLen).reshape(-1)
                );
                t1 = sw.Elapsed.TotalSeconds;
                loss.backward();
                t2 = sw.Elapsed.TotalSeconds;
            }
            if (clip > 0)
                opt.ClipGradNorm(clip);
            opt.StepWith(1e-4);
            double t3 = sw.Elapsed.TotalSeconds;
            split.Add((t1, t2 - t1, t3 - t2));
            return t3;
        }
        for (int i = 0; i < warmup; i++)
            Step(); // allocations, optimizer state
        split.Clear();
        var times = Enumerable.Range(0, steps).Select(_ => Step()).ToList();
        double tokS = batch * seqLen / Median(times);
        double flops = TrainFlopsPerToken(cfg, seqLen) * tokS / 1e9;
        r["train_tokens_per_step"] = batch * seqLen;
        r["train_step_seconds_median"] = Median(times);
        r["train_forward_seconds_median"] = Median(split.Select(x => x.fwd));
        r["train_backward_seconds_median"] = Median(split.Select(x => x.bwd));
        r["train_optimizer_seconds_median"] = Median(split.Select(x => x.opt));
        r["train_tokens_per_second"] = tokS;
        r["model_gflops"] = flops;
        r["mfu_in_process"] = flops / peak;
        if (machinePeak is { } mp) // no stated peak for this CPU: no machine MFU, rather than a wrong one
            r["mfu_machine"] = flops / mp;
        r["train_gradient_clipping"] = clip;
        r["peak_rss_mb"] = PeakRss() / 1e6;
        if (memorySteps > 0)
        {
            // RSS first rises to a plateau (kept heap blocks); a leak would keep growing after it. Growth is therefore
            // measured from the end of the first fifth of the steps.
            long before = Rss();
            int warm = Math.Max(1, memorySteps / 5);
            for (int i = 0; i < warm; i++)
                Step();
            long plateau = Rss();
            for (int i = warm; i < memorySteps; i++)
                Step();
            long after = Rss();
            r["rss_before_mb"] = before / 1e6;
            r["rss_after_warmup_mb"] = plateau / 1e6;
            r["rss_after_mb"] = after / 1e6;
            r["rss_warmup_rise_mb"] = (plateau - before) / 1e6;
            r["rss_growth_mb"] = (after - plateau) / 1e6; // the leak check: ~0
            r["memory_steps"] = memorySteps;
            r["peak_rss_mb"] = PeakRss() / 1e6;
        }
        opt.Dispose();
        return r;
    }

    /// <summary>End-to-end generation as the peers define it; returns tokens/s (median of runs).</summary>
    public static double GenerateTokensPerSecond(
        Qwen3ForCausalLM model,
        int batch,
        bool greedy,
        int runs,
        int promptLen = 32,
        int newTokens = 128
    )
    {
        var rng = new Random(11);
        var opt = PeerGeneration(newTokens) with { Greedy = greedy, Seed = 3 };
        var times = new List<double>();
        for (int r = 0; r < runs + 1; r++) // the first run warms up
        {
            var prompts = RandomPrompts(rng, model, batch, promptLen);
            var sw = Stopwatch.StartNew();
            Generation.Generate(model, prompts, opt with { Seed = r });
            if (r > 0)
                times.Add(sw.Elapsed.TotalSeconds);
        }
        return batch * newTokens / Median(times);
    }

    /// <summary>The peers' generation: temperature 1, top-p 1, no top-k and no EOS, so every sequence runs the full
    /// newTokens.</summary>
    static GenerationOptions PeerGeneration(int newTokens) =>
        GenerationOptions.Sampling(newTokens, temperature: 1.0, topP: 1.0, topK: 0, eosTokenIds: []);

    /// <summary>batch random prompts of promptLen ids below the first special token.</summary>
    static List<int[]> RandomPrompts(Random rng, Qwen3ForCausalLM model, int batch, int promptLen)
    {
        int vocab = Math.Min(model.Config.VocabSize, 151643);
        return Enumerable
            .Range(0, batch)
            .Select(_ => Enumerable.Range(0, promptLen).Select(_ => rng.Next(vocab)).ToArray())
            .ToList();
    }

    /// <summary>Sampling's cost against greedy decoding at one batch, from alternating pairs: each pair decodes the
    /// same fresh prompts greedily and sampled (the order swapped from pair to pair, after one warm-up of each), and
    /// its ratio is greedy's seconds over sampling's. Why pairs: this machine's speed drifts 10-30% between runs, so
    /// two blocks of runs measured one after the other compare the drift as much as the decoders.</summary>
    public static Dictionary<string, object> SampleOverGreedy(
        Qwen3ForCausalLM model,
        int batch,
        int pairs,
        int promptLen = 32,
        int newTokens = 128
    )
    {
        var rng = new Random(13);
        var opt = PeerGeneration(newTokens);
        double Time(List<int[]> prompts, bool greedy, int seed)
        {
            var sw = Stopwatch.StartNew();
            Generation.Generate(model, prompts, opt with { Greedy = greedy, Seed = seed });
            return sw.Elapsed.TotalSeconds;
        }
        List<int[]> Prompts() => RandomPrompts(rng, model, batch, promptLen);
        var warm = Prompts();
        Time(warm, true, 0);
        Time(warm, false, 0);
        var greedy = new List<double>();
        var sampled = new List<double>();
        for (int i = 0; i < pairs; i++)
        {
            var prompts = Prompts();
            bool greedyFirst = i % 2 == 0;
            double a = Time(prompts, greedyFirst, i + 1),
                b = Time(prompts, !greedyFirst, i + 1);
            greedy.Add(greedyFirst ? a : b);
            sampled.Add(greedyFirst ? b : a);
        }
        var ratios = greedy.Zip(sampled, (g, sm) => g / sm).ToList();
        return new()
        {
            [$"generate_tokens_per_second_batch{batch}"] = batch * newTokens / Median(greedy),
            [$"sample_tokens_per_second_batch{batch}"] = batch * newTokens / Median(sampled),
            ["sample_over_greedy"] = Median(ratios),
            ["sample_over_greedy_min"] = ratios.Min(),
            ["sample_over_greedy_max"] = ratios.Max(),
            ["sample_over_greedy_pairs"] = ratios.ToArray(),
            ["sample_over_greedy_definition"] =
                $"median over {pairs} alternating pairs (same prompts, order swapped each pair) of greedy seconds "
                + "over sampled seconds (temperature 1, top-p 1)",
        };
    }

    /// <summary>Pairs for <see cref="SampleOverGreedy"/>: at least 6 and even, so each order comes first equally
    /// often.</summary>
    public static int Pairs(int runs)
    {
        int n = Math.Max(runs, 6);
        return n + n % 2;
    }

    /// <param name="onlyBatch">measure greedy at this batch only (and sampling there), skipping the KV latency</param>
    public static Dictionary<string, object> Generate(
        Qwen3Config cfg,
        ScalarType dtype,
        int runs = 3,
        int groupSize = 8,
        int? onlyBatch = null
    )
    {
        var r = new Dictionary<string, object>();
        using var model = new Qwen3ForCausalLM(cfg, dtype, CPU, seed: 1);
        model.eval();
        r["generate_definition"] = "prompt 32 random tokens, 128 new, greedy, end to end (prefill + 127 steps)";
        if (onlyBatch is { } ob)
        {
            foreach (var (k, v) in SampleOverGreedy(model, ob, Pairs(runs)))
                r[k] = v;
            return r;
        }
        double b1 = GenerateTokensPerSecond(model, 1, true, runs),
            bg = GenerateTokensPerSecond(model, groupSize, true, runs);
        r["generate_tokens_per_second_batch1"] = b1;
        r[$"generate_tokens_per_second_batch{groupSize}"] = bg;
        r["batch_speedup"] = bg / b1;
        foreach (var (k, v) in SampleOverGreedy(model, groupSize, Pairs(runs)))
            // greedy's own figure stays the one above; the pairs' greedy rate, the ratio's base, is kept beside it
            r[k == $"generate_tokens_per_second_batch{groupSize}" ? k + "_paired" : k] = v;
        // one decoding step's latency with 32 vs 512 tokens already in the cache
        double StepAt(int pos)
        {
            using var _ = no_grad();
            using var cache = model.NewCache(1, pos + 40);
            using (
                var pre = tensor(Enumerable.Range(0, pos).Select(i => (long)(i % cfg.VocabSize)).ToArray(), [1, pos])
            )
                model.Forward(pre, cache: cache, lastOnly: true).Dispose();
            var times = new List<double>();
            for (int i = 0; i < 31; i++)
            {
                using var scope = NewDisposeScope();
                var x = tensor(new long[] { i % cfg.VocabSize }, [1, 1]);
                var sw = Stopwatch.StartNew();
                model.Forward(x, cache: cache, lastOnly: true);
                times.Add(sw.Elapsed.TotalSeconds);
            }
            return Median(times);
        }
        double t32 = StepAt(32),
            t512 = StepAt(512);
        r["token_latency_ms_at_32"] = t32 * 1e3;
        r["token_latency_ms_at_512"] = t512 * 1e3;
        r["latency_ratio_512_over_32"] = t512 / t32;
        return r;
    }

    public static Dictionary<string, object> Grpo(
        Qwen3Config cfg,
        ScalarType dtype,
        Codec codec,
        Data.TaskData task,
        int steps
    )
    {
        using var model = new Qwen3ForCausalLM(cfg, dtype, CPU, seed: 1);
        var dir = Path.Combine(Path.GetTempPath(), "workbook-bench-" + Guid.NewGuid().ToString("N"));
        var rollout = new List<double>();
        var update = new List<double>();
        try
        {
            var tr = Trainers.Create(
                new GrpoOptions
                {
                    LearningRate = 1e-4,
                    MaxSteps = steps,
                    PerDeviceTrainBatchSize = 64,
                    NumGenerations = 8,
                    MaxCompletionLength = 40,
                    Dtype = Devices.Name(dtype),
                },
                model,
                codec,
                task.Train,
                task.Reward,
                dir
            );
            tr.OnLog += (_, m) =>
            {
                if (m.TryGetValue("timing/rollout", out var a))
                {
                    rollout.Add(a);
                    update.Add(m["timing/update"]);
                }
            };
            tr.Train();
        }
        finally
        {
            try
            {
                if (Directory.Exists(dir))
                    Directory.Delete(dir, true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"note: could not delete {dir}: {e.Message}"); // never hides the run's error
            }
        }
        return new()
        {
            ["grpo_rollout_seconds_median"] = Median(rollout),
            ["grpo_update_seconds_median"] = Median(update),
            ["grpo_completions_per_step"] = 64,
            ["grpo_shared_prompt_forward"] = new GrpoOptions().SharedPromptForward,
        };
    }

    static readonly string[] CommonWords = (
        "the of and to a in is it you that he was for on are with as I his they be at one have this from or had by "
        + "word but what some we can out other were all there when up use your how said an each she which do their "
        + "time if will way about many then them write would like so these her long make thing see him two has look "
        + "more day could go come did number sound no most people my over know water than call first who may down side "
        + "been now find any new work part take get place made live where after back little only round man year came "
        + "show every good me give our under name very through just form sentence great think say help low line differ "
        + "turn cause much mean before move right boy old too same tell does set three want air well also play small "
        + "end put home read hand port large spell add even land here must big high such follow act why ask men change "
        + "went light kind off need house picture try us again animal point mother world near build self earth father "
        + "head stand own page should country found answer school grow study still learn plant cover food sun four "
        + "between state keep eye never last let thought city tree cross farm hard start might story saw far sea draw "
        + "left late run while press close night real life few north"
    ).Split(' ');

    /// <summary>Encode speed of a fresh tokenizer instance (empty word cache) on (a) English-like prose: common words
    /// drawn with Zipf frequencies, punctuation and numbers, as real text repeats words; (b) adversarial text where
    /// nearly every word is new (random suffixes); (c) optionally a real text file. One thread: the tokenizer is
    /// single-threaded.</summary>
    public static Dictionary<string, object> Tokenizer(
        string tokenizerPath,
        string? textFile = null,
        int chars = 300_000
    )
    {
        var rng = new Random(17);
        string Prose(bool adversarial)
        {
            var sb = new System.Text.StringBuilder();
            double h = CommonWords.Select((_, i) => 1.0 / (i + 1)).Sum();
            while (sb.Length < chars)
            {
                int n = rng.Next(6, 18);
                for (int i = 0; i < n; i++)
                {
                    double u = rng.NextDouble() * h;
                    int k = 0;
                    while (k < CommonWords.Length - 1 && (u -= 1.0 / (k + 1)) > 0)
                        k++;
                    var w = CommonWords[k];
                    if (i == 0)
                        w = char.ToUpperInvariant(w[0]) + w[1..];
                    if (adversarial)
                        w += (char)('a' + rng.Next(26)) + rng.Next(1000).ToString();
                    else if (rng.Next(40) == 0)
                        w = rng.Next(2, 2000).ToString();
                    sb.Append(
                            i == 0 ? ""
                            : rng.Next(15) == 0 ? ", "
                            : " "
                        )
                        .Append(w);
                }
                sb.Append(rng.Next(8) == 0 ? "?\n" : ". ");
            }
            return sb.ToString();
        }
        Text.Qwen3Tokenizer.Load(tokenizerPath).Encode("warm up the JIT: 12 words, once.");
        double Rate(string text, out int tokens)
        {
            var tok = Text.Qwen3Tokenizer.Load(tokenizerPath); // fresh instance: nothing cached
            var sw = Stopwatch.StartNew();
            tokens = tok.Encode(text).Length;
            return tokens / sw.Elapsed.TotalSeconds;
        }
        var r = new Dictionary<string, object>
        {
            ["tokenizer_prose_tokens_per_second"] = Rate(Prose(false), out var n1),
            ["tokenizer_prose_tokens"] = n1,
            ["tokenizer_adversarial_tokens_per_second"] = Rate(Prose(true), out var n2),
            ["tokenizer_adversarial_tokens"] = n2,
        };
        if (textFile is not null)
        {
            if (!File.Exists(textFile))
                throw new WorkbookException($"{textFile}: file not found");
            r["tokenizer_file"] = textFile;
            r["tokenizer_file_tokens_per_second"] = Rate(File.ReadAllText(textFile), out var n3);
            r["tokenizer_file_tokens"] = n3;
        }
        return r;
    }
}
