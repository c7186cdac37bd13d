// Speed is measured here, never in unit tests. Everything is measured in one process, so the numbers are comparable:
//  - peak: a 2048x2048 GEMM in the compute dtype (median of repeats), the denominator of model FLOP utilisation;
//  - train: SFT steps (forward + backward + AdamW) on random tokens, tokens/s and MFU, with the FLOP count
//    6·(matmul params + V·d)·tokens + 12·layers·T·(heads·head_dim)·tokens; RSS before/after many steps (memory flatness);
//  - grpo: one GRPO step split into rollout (generation) and update;
//  - generate: tokens/s at batch 1 and batch 8, and the per-token latency at position 32 vs 512 (KV-cache scaling).
using System.Diagnostics;
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Bench;

public static class Benchmarks
{
    static double Median(IEnumerable<double> xs) { var a = xs.Order().ToArray(); return a.Length == 0 ? double.NaN : a[a.Length / 2]; }

    public static double GemmPeakGflops(ScalarType dtype, int n = 2048, int repeats = 5)
    {
        using var a = randn(n, n).to(dtype); using var b = randn(n, n).to(dtype);
        using (var w = a.matmul(b)) { }
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            using var c = a.matmul(b);
            times.Add(sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / Median(times) / 1e9;
    }

    public static double TrainFlopsPerToken(Qwen3Config c, int seqLen)
    {
        long d = c.HiddenSize, qd = (long)c.NumAttentionHeads * c.HeadDim, kvd = (long)c.NumKeyValueHeads * c.HeadDim;
        long layerMatmul = c.NumHiddenLayers * (d * qd + 2 * d * kvd + qd * d + 3 * d * c.IntermediateSize);
        return 6.0 * (layerMatmul + (long)c.VocabSize * d) + 12.0 * c.NumHiddenLayers * seqLen * qd;
    }

    static long Rss() { using var p = Process.GetCurrentProcess(); p.Refresh(); return p.WorkingSet64; }

    public static Dictionary<string, object> Train(Qwen3Config cfg, ScalarType dtype, int batch, int seqLen, int steps, int memorySteps)
    {
        var r = new Dictionary<string, object>();
        double peak = GemmPeakGflops(dtype);
        r["gemm_peak_gflops"] = peak;
        using var model = new Qwen3ForCausalLM(cfg, dtype, CPU, seed: 1);
        var opt = new AdamW(model.named_parameters());
        var gen = new Generator(7);
        model.train();
        double Step()
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            var ids = randint(0, cfg.VocabSize, [batch, seqLen], generator: gen);
            opt.ZeroGrad();
            var logits = model.Forward(ids.narrow(1, 0, seqLen - 1)).to(ScalarType.Float32);
            var loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.VocabSize), ids.narrow(1, 1, seqLen - 1).reshape(-1));
            loss.backward();
            opt.ClipGradNorm(1.0);
            opt.StepWith(1e-4);
            return sw.Elapsed.TotalSeconds;
        }
        for (int i = 0; i < 3; i++) Step();   // warm-up (allocations, optimizer state)
        var times = Enumerable.Range(0, steps).Select(_ => Step()).ToList();
        double tokS = batch * (seqLen - 1) / Median(times);
        double flops = TrainFlopsPerToken(cfg, seqLen - 1) * tokS / 1e9;
        r["sft_step_seconds_median"] = Median(times);
        r["sft_tokens_per_second"] = tokS;
        r["model_gflops"] = flops;
        r["mfu"] = flops / peak;
        if (memorySteps > 0)
        {
            // glibc keeps freed blocks, so RSS first rises to a plateau (unless MALLOC_MMAP_THRESHOLD_ is set); a leak would
            // keep growing after it. Growth is therefore measured from the end of the first fifth of the steps.
            long before = Rss();
            int warm = Math.Max(1, memorySteps / 5);
            for (int i = 0; i < warm; i++) Step();
            long plateau = Rss();
            for (int i = warm; i < memorySteps; i++) Step();
            long after = Rss();
            r["rss_before_mb"] = before / 1e6; r["rss_after_warmup_mb"] = plateau / 1e6; r["rss_after_mb"] = after / 1e6;
            r["rss_warmup_rise_mb"] = (plateau - before) / 1e6;
            r["rss_growth_mb"] = (after - plateau) / 1e6;   // the leak check: ~0
            r["memory_steps"] = memorySteps;
        }
        opt.Dispose();
        return r;
    }

    public static Dictionary<string, object> Generate(Qwen3Config cfg, ScalarType dtype, int groupSize = 8)
    {
        var r = new Dictionary<string, object>();
        using var model = new Qwen3ForCausalLM(cfg, dtype, CPU, seed: 1);
        model.eval();
        var prompt = Enumerable.Range(0, 32).Select(i => (i * 37) % cfg.VocabSize).ToArray();
        double TokPerSec(int b, int n)
        {
            var opt = new GenerationOptions { MaxNewTokens = n, Temperature = 1.0, Seed = 3, EosTokenIds = [] };
            Generation.Generate(model, Enumerable.Repeat(prompt, b).ToList(), opt with { MaxNewTokens = 4 });   // warm-up
            var sw = Stopwatch.StartNew();
            Generation.Generate(model, Enumerable.Repeat(prompt, b).ToList(), opt);
            return b * n / sw.Elapsed.TotalSeconds;
        }
        r["generate_tokens_per_second_batch1"] = TokPerSec(1, 64);
        r[$"generate_tokens_per_second_batch{groupSize}"] = TokPerSec(groupSize, 64);
        r["batch_speedup"] = (double)r[$"generate_tokens_per_second_batch{groupSize}"] / (double)r["generate_tokens_per_second_batch1"];
        // one decoding step's latency with 32 vs 512 tokens already in the cache
        double StepAt(int pos)
        {
            using var _ = no_grad();
            using var cache = model.NewCache(1, pos + 40);
            using (var pre = tensor(Enumerable.Range(0, pos).Select(i => (long)(i % cfg.VocabSize)).ToArray(), [1, pos])) model.Forward(pre, cache: cache, lastOnly: true).Dispose();
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
        double t32 = StepAt(32), t512 = StepAt(512);
        r["token_latency_ms_at_32"] = t32 * 1e3; r["token_latency_ms_at_512"] = t512 * 1e3; r["latency_ratio_512_over_32"] = t512 / t32;
        return r;
    }

    public static Dictionary<string, object> Grpo(Qwen3Config cfg, ScalarType dtype, Codec codec, Data.TaskData task, int steps)
    {
        using var model = new Qwen3ForCausalLM(cfg, dtype, CPU, seed: 1);
        var dir = Path.Combine(Path.GetTempPath(), "workbook-bench-" + Guid.NewGuid().ToString("N"));
        var tr = new GrpoTrainer(model, codec, task.Train, task.Reward, new GrpoOptions
        {
            LearningRate = 1e-4, MaxSteps = steps, PerDeviceTrainBatchSize = 64, NumGenerations = 8, MaxCompletionLength = 40, Dtype = Devices.Name(dtype),
        }, dir);
        var rollout = new List<double>(); var update = new List<double>();
        tr.OnLog += (_, m) => { if (m.TryGetValue("timing/rollout", out var a)) { rollout.Add(a); update.Add(m["timing/update"]); } };
        tr.Train();
        Directory.Delete(dir, true);
        return new() { ["grpo_rollout_seconds_median"] = Median(rollout), ["grpo_update_seconds_median"] = Median(update), ["grpo_completions_per_step"] = 64 };
    }

    static readonly string[] CommonWords = ("the of and to a in is it you that he was for on are with as I his they be at one have this from or had by " +
        "word but what some we can out other were all there when up use your how said an each she which do their time if will way about many then them " +
        "write would like so these her long make thing see him two has look more day could go come did number sound no most people my over know water " +
        "than call first who may down side been now find any new work part take get place made live where after back little only round man year came " +
        "show every good me give our under name very through just form sentence great think say help low line differ turn cause much mean before move " +
        "right boy old too same tell does set three want air well also play small end put home read hand port large spell add even land here must big " +
        "high such follow act why ask men change went light kind off need house picture try us again animal point mother world near build self earth " +
        "father head stand own page should country found answer school grow study still learn plant cover food sun four between state keep eye never " +
        "last let thought city tree cross farm hard start might story saw far sea draw left late run while press close night real life few north").Split(' ');

    /// <summary>Encode speed of a fresh tokenizer instance (empty word cache) on (a) English-like prose: common words drawn
    /// with Zipf frequencies, punctuation and numbers, as real text repeats words; (b) adversarial text where nearly every
    /// word is new (random suffixes); (c) optionally a real text file. One thread: the tokenizer is single-threaded.</summary>
    public static Dictionary<string, object> Tokenizer(string tokenizerPath, string? textFile = null, int chars = 300_000)
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
                    double u = rng.NextDouble() * h; int k = 0;
                    while (k < CommonWords.Length - 1 && (u -= 1.0 / (k + 1)) > 0) k++;
                    var w = CommonWords[k];
                    if (i == 0) w = char.ToUpperInvariant(w[0]) + w[1..];
                    if (adversarial) w += (char)('a' + rng.Next(26)) + rng.Next(1000).ToString();
                    else if (rng.Next(40) == 0) w = rng.Next(2, 2000).ToString();
                    sb.Append(i == 0 ? "" : rng.Next(15) == 0 ? ", " : " ").Append(w);
                }
                sb.Append(rng.Next(8) == 0 ? "?\n" : ". ");
            }
            return sb.ToString();
        }
        Text.Qwen3Tokenizer.Load(tokenizerPath).Encode("warm up the JIT: 12 words, once.");
        double Rate(string text, out int tokens)
        {
            var tok = Text.Qwen3Tokenizer.Load(tokenizerPath);   // fresh instance: nothing cached
            var sw = Stopwatch.StartNew();
            tokens = tok.Encode(text).Length;
            return tokens / sw.Elapsed.TotalSeconds;
        }
        var r = new Dictionary<string, object>
        {
            ["tokenizer_prose_tokens_per_second"] = Rate(Prose(false), out var n1), ["tokenizer_prose_tokens"] = n1,
            ["tokenizer_adversarial_tokens_per_second"] = Rate(Prose(true), out var n2), ["tokenizer_adversarial_tokens"] = n2,
        };
        if (textFile is not null)
        {
            if (!File.Exists(textFile)) throw new WorkbookException($"{textFile}: file not found");
            r["tokenizer_file"] = textFile;
            r["tokenizer_file_tokens_per_second"] = Rate(File.ReadAllText(textFile), out var n3);
            r["tokenizer_file_tokens"] = n3;
        }
        return r;
    }
}
