// The landscape view (OUR reconstruction, notes/paper.md §3 [R]) measured on the small Qwen3 transformer.
// So that every objective is exact (no sampling noise), the policy is the transformer restricted to a finite candidate
// set: p_θ(y|x) = softmax over y ∈ C_x of log π_θ(y|x), log π_θ(y|x) = Σ log-probs of the reply's tokens and its
// <|im_end|>; L_S(θ) = E_x CE(p_data(·|x), p_θ(·|x)), p_data = the expert mix over the candidates (half strict, the
// rest terse or in words,            a little label noise);
//   J_β(θ) = E_x [p_θ·r − β KL(p_θ ‖ p_0)], r = the task's strict verifier on each candidate, p_0 = the policy at θ_0.
// Protocol, in float64: (1) SFT by full-batch Adam from the base model until ‖∇L_S‖ is small (θ_0 ≈ an SFT optimum);
// (2) RL by plain gradient ascent on J_β with η = 1/ℓ_R; (3) along the way, compare the §3 statements with what
// happens: smoothness (ℓ from Hessian-vector products, power iteration, maximum along the path: an estimate, not a
// bound), PL contraction of the RL gap with μ_R measured on the path, T*, the one-step threshold, and the misalignment
// lemma with M = J_θ J_θᵀ computed exactly (J_θ = the Jacobian of the candidates' log-probs). The candidate class has a
// closed-form RL optimum p* ∝ p_0·exp(r/β) (Theorem 3.1's tilt), which gives J* and the predicted SFT rise if RL runs
// to the end.
using System.Text.Json.Serialization;
using Workbook.Data;
using Workbook.Model;
using Workbook.Training;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Theory;

public sealed record TransformerLandscapeOptions
{
    public int Prompts { get; init; } = 12;

    /// <summary>Reply templates ({label}, {other}) and their share in the expert data.</summary>
    public string[] Candidates { get; init; } =
    ["Answer: {label}", "{label}", "It is {label}.", "Answer: {other}", "It is {other}."];
    public double[] ExpertMix { get; init; } = [0.5, 0.2, 0.2, 0.07, 0.03];
    public double Beta { get; init; } = 0.5;
    public int SftSteps { get; init; } = 300;
    public double SftLearningRate { get; init; } = 3e-3;
    public int RlSteps { get; init; } = 60;

    /// <summary>Extra RL steps after the measured ones, to see where RL ends (the predicted final SFT rise).</summary>
    public int RlTailSteps { get; init; } = 240;

    /// <summary>λ of Φ(T) = [J(θ_T) − J(θ_0)] − λ[L_S(θ_T) − L_S(θ_0)].</summary>
    public double Lambda { get; init; } = 0.25;

    /// <summary>SFT snapshots (steps 0, 1, 2, 3, 5, 8, ... growing by half) from which one RL step tests the
    /// non-decoupling threshold.</summary>
    public int ThresholdPoints { get; init; } = 12;

    /// <summary>Estimate ℓ_S, ℓ_R every this many RL steps.</summary>
    public int CurvatureEvery { get; init; } = 10;
    public int PowerIterations { get; init; } = 30;
    public int Seed { get; init; } = 0;

    public TransformerLandscapeOptions Quick() =>
        this with
        {
            Prompts = 8,
            SftSteps = 200,
            RlSteps = 30,
            RlTailSteps = 90,
            CurvatureEvery = 15,
            PowerIterations = 20,
        };

    /// <summary>Checks the options before any work (and before a run folder is claimed).</summary>
    public void Validate()
    {
        if (Candidates.Length != ExpertMix.Length)
            throw new WorkbookException("landscape: candidates and expert_mix differ in length");
        if (Math.Abs(ExpertMix.Sum() - 1) > 1e-9 || ExpertMix.Any(p => !(p > 0)))
            throw new WorkbookException("landscape: expert_mix must be positive and sum to 1");
        if (!(Beta > 0) || !double.IsFinite(Beta))
            throw new WorkbookException($"landscape: beta must be a finite number > 0 (got {Beta})");
        if (Prompts < 1 || SftSteps < 0 || RlSteps < 1 || RlTailSteps < 0)
            throw new WorkbookException(
                "landscape: prompts and rl_steps must be >= 1, sft_steps and rl_tail_steps >= 0"
            );
    }
}

public sealed record TransformerStep(
    int T,
    double SftLoss,
    double Objective,
    double Reward,
    double SftGradNorm,
    double RlGradNorm,
    double Cos,
    double TaylorResidual,
    double TaylorBound,
    double RiseUpperBound,
    double ObjectiveGapBound,
    bool SufficientHeld,
    bool SftDecreased
);

/// <summary>One RL step from an SFT snapshot: the SFT gap, cos(∇J, −∇L_S), the cosine the sufficient condition needs,
/// whether it held, whether L_S fell, and the gap the condition requires (ℓ_S η²‖∇J‖²/(8cos²φ), when cos >
/// 0).</summary>
public sealed record ThresholdPoint(
    int SftStep,
    double SftGap,
    double Cos,
    double CosNeeded,
    bool SufficientHeld,
    bool SftDecreased,
    double GapNeeded
);

public sealed record MisalignmentCheck(
    double Cos,
    double CosFromGram,
    double Epsilon,
    double Bound,
    double TopFraction
);

public sealed record TransformerLandscapeResult(
    long Parameters,
    double Beta,
    double SftLossStart,
    double SftEntropyFloor,
    double SftGradNormStart,
    double EllS,
    double EllR,
    double MuR,
    double Eta,
    double Kappa,
    double JStar,
    IReadOnlyList<TransformerStep> Trajectory,
    int TaylorViolations,
    int RiseViolations,
    int ContractionViolations,
    int SufficientHeld,
    int SufficientButIncreased,
    int StepsThatLoweredSft,
    int MeasuredTStar,
    double PredictedTStar,
    double Lambda,
    double PredictedFinalRise,
    double MeasuredFinalRise,
    double FinalObjective,
    int TotalRlSteps,
    MisalignmentCheck AtStart,
    MisalignmentCheck AtEnd,
    IReadOnlyList<ThresholdPoint> Threshold
)
{
    [JsonIgnore]
    public TransformerStep Last => Trajectory[^1];

    /// <summary>The stop rule replayed on this trajectory against the predicted T*, both scored against hindsight
    /// (issue 14 §3).</summary>
    public StopVsTStar? Stopping { get; init; }
}

/// <summary>The transformer restricted to a finite set of replies per prompt, with exact SFT and RL
/// objectives.</summary>
public sealed class CandidatePolicy
{
    readonly Qwen3ForCausalLM model;
    readonly Losses.Batch batch;
    public int P { get; }
    public int K { get; }
    public double[,] Rewards { get; }
    public double[,] Data { get; }
    public double Beta { get; }
    public double[,]? Reference { get; private set; }
    public IReadOnlyList<string[]> Texts { get; }

    public CandidatePolicy(
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> prompts,
        IVerifier reward,
        TransformerLandscapeOptions o
    )
    {
        o.Validate();
        this.model = model;
        Beta = o.Beta;
        P = prompts.Count;
        K = o.Candidates.Length;
        Rewards = new double[P, K];
        Data = new double[P, K];
        var texts = new List<string[]>();
        var seqs = new List<SftSequence>();
        for (int x = 0; x < P; x++)
        {
            var e = prompts[x];
            var other = e.Reference == "acceptable" ? "unacceptable" : "acceptable";
            var row = o.Candidates.Select(c => c.Replace("{label}", e.Reference).Replace("{other}", other)).ToArray();
            texts.Add(row);
            for (int k = 0; k < K; k++)
            {
                Rewards[x, k] = reward.Score(e.PromptText, row[k], e.Reference).Reward ?? 0;
                Data[x, k] = o.ExpertMix[k];
                seqs.Add(codec.Sft(e with { Expert = row[k] }));
            }
        }
        Texts = texts;
        batch = Losses.MakeSftBatch(seqs, codec.PadId, 4096, packing: false);
    }

    /// <summary>log π_θ(y|x) of every candidate, [P, K], differentiable.</summary>
    public Tensor SequenceLogProbs()
    {
        using var scope = NewDisposeScope();
        var dev = model.Device;
        var logits = model.Forward(batch.Ids.to(dev), batch.Mask.to(dev), batch.Positions.to(dev));
        var logp = logits.log_softmax(-1).gather(-1, batch.Targets.to(dev).unsqueeze(-1)).squeeze(-1);
        return (logp * batch.LossMask.to(dev).to(logp.dtype)).sum(1).reshape(P, K).MoveToOuterDisposeScope();
    }

    Tensor T(double[,] a) => tensor(a).to(model.Device).to(model.parameters().First().dtype);

    /// <summary>L_S as a function of the candidates' log-probs (so that ∂L_S/∂z is available).</summary>
    public Tensor SftLoss(Tensor z)
    {
        using var scope = NewDisposeScope(); // holds the temporaries whatever the caller has (see HeldScalars)
        return (-(T(Data) * z.log_softmax(1)).sum(1).mean()).MoveToOuterDisposeScope();
    }

    public Tensor SftLoss() => SftLoss(SequenceLogProbs());

    /// <summary>J_β as a function of the candidates' log-probs; needs the reference (FixReference).</summary>
    public Tensor Objective(Tensor z)
    {
        if (Reference is null)
            throw new InvalidOperationException("FixReference first");
        using var scope = NewDisposeScope();
        var logp = z.log_softmax(1);
        var p = logp.exp();
        return ((p * T(Rewards)).sum(1) - (p * (logp - T(Reference).log())).sum(1).Times(Beta))
            .mean()
            .MoveToOuterDisposeScope();
    }

    public Tensor Objective() => Objective(SequenceLogProbs());

    /// <summary>Mean strict reward p_θ·r.</summary>
    public double Reward()
    {
        using var _ = no_grad();
        using var s = NewDisposeScope();
        return (SequenceLogProbs().softmax(1) * T(Rewards)).sum(1).mean().item<double>();
    }

    public double[,] Policy()
    {
        using var _ = no_grad();
        using var s = NewDisposeScope();
        return ToArray(SequenceLogProbs().softmax(1));
    }

    /// <summary>The current policy becomes the RL reference p_0.</summary>
    public void FixReference() => Reference = Policy();

    /// <summary>The exact optimum of J_β over all candidate distributions: p* ∝ p_0 exp(r/β); J* = E_x β log Σ p_0
    /// exp(r/β).</summary>
    public (double JStar, double[,] PStar) Optimum()
    {
        var r0 = Reference ?? throw new InvalidOperationException("FixReference first");
        var ps = new double[P, K];
        double j = 0;
        for (int x = 0; x < P; x++)
        {
            double z = 0;
            for (int k = 0; k < K; k++)
                z += r0[x, k] * Math.Exp(Rewards[x, k] / Beta);
            for (int k = 0; k < K; k++)
                ps[x, k] = r0[x, k] * Math.Exp(Rewards[x, k] / Beta) / z;
            j += Beta * Math.Log(z) / P;
        }
        return (j, ps);
    }

    /// <summary>E_x CE(p_data, p) for a table p.</summary>
    public double CrossEntropy(double[,] p)
    {
        double s = 0;
        for (int x = 0; x < P; x++)
        for (int k = 0; k < K; k++)
            s -= Data[x, k] * Math.Log(p[x, k]) / P;
        return s;
    }

    public double DataEntropy => CrossEntropy(Data);

    /// <summary>The misalignment lemma with M = J_θ J_θᵀ exact: J_θ has one row per candidate log-prob (P·K backward
    /// passes).</summary>
    public MisalignmentCheck Misalignment()
    {
        using var scope = NewDisposeScope();
        var ps = Curvature.Parameters(model);
        var z = SequenceLogProbs();
        var zl = z.detach().requires_grad_(true);
        var gS = autograd.grad([SftLoss(zl)], [zl])[0].flatten();
        var gR = autograd.grad([-Objective(zl)], [zl])[0].flatten(); // descent direction on −J
        int n = P * K;
        var rows = new double[n][];
        var flat = z.flatten();
        for (int i = 0; i < n; i++)
        {
            rows[i] = Curvature.Flat(ps, autograd.grad([flat[i]], ps, retain_graph: true, allow_unused: true));
        }
        var M = new double[n, n];
        for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++)
            M[i, j] = M[j, i] = Curvature.Dot(rows[i], rows[j]);
        var a = gS.to(ScalarType.Float64).data<double>().ToArray();
        var b = gR.to(ScalarType.Float64).data<double>().ToArray();
        // the parameter-space gradients G = J_θᵀ g, directly
        var GS = new double[rows[0].Length];
        var GR = new double[rows[0].Length];
        for (int i = 0; i < n; i++)
        for (int k = 0; k < GS.Length; k++)
        {
            GS[k] += a[i] * rows[i][k];
            GR[k] += b[i] * rows[i][k];
        }
        double cos = Curvature.Cosine(GS, GR);
        var (cosM, eps, bound) = Landscape.SpectralConcentration(M, a, b);
        double trace = 0;
        for (int i = 0; i < n; i++)
            trace += M[i, i];
        double top = Linalg.SymmetricEigen(M).values.Max();
        // SpectralConcentration returns |cos|; keep the sign of the direct one
        return new MisalignmentCheck(cos, Math.Sign(cos) * cosM, eps, bound, top / trace);
    }

    static double[,] ToArray(Tensor t)
    {
        var d = t.to(ScalarType.Float64).cpu().data<double>().ToArray();
        int r = (int)t.shape[0],
            c = (int)t.shape[1];
        var a = new double[r, c];
        for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            a[i, j] = d[i * c + j];
        return a;
    }
}

public static class TransformerLandscape
{
    /// <summary>Runs the protocol on a float64 model (changed in place) and compares predictions with
    /// measurements.</summary>
    public static TransformerLandscapeResult Run(
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> prompts,
        IVerifier reward,
        TransformerLandscapeOptions o,
        Action<string>? log = null
    )
    {
        if (model.parameters().First().dtype != ScalarType.Float64)
            throw new WorkbookException("landscape: the model must be float64 (exact constants)");
        log ??= _ => { };
        var pol = new CandidatePolicy(model, codec, prompts.Take(o.Prompts).ToList(), reward, o);
        model.train(false);

        // (1) SFT to near-stationarity, keeping snapshots for the threshold test
        var snapshots = new List<(int Step, double[] Theta)>();
        var snapAt = new SortedSet<int>();
        for (double v = 1; snapAt.Count < o.ThresholdPoints && v < o.SftSteps; v *= 1.5)
            snapAt.Add((int)v - 1);
        using (var opt = new FullBatchAdam(model.parameters().ToArray(), o.SftLearningRate))
        {
            for (int s = 0; s < o.SftSteps; s++)
            {
                if (snapAt.Contains(s))
                    snapshots.Add((s, Curvature.Get(model)));
                using var scope = NewDisposeScope();
                opt.ZeroGrad();
                var l = pol.SftLoss();
                l.backward();
                opt.Step();
                if (s % 100 == 0)
                    log($"landscape sft step {s}: L_S {l.item<double>():F5}");
            }
            opt.ZeroGrad();
        }
        pol.FixReference();
        var theta0 = Curvature.Get(model);
        var (s0, gS0) = Curvature.Gradient(model, () => pol.SftLoss());
        var (jStar, pStar) = pol.Optimum();

        // (2) RL by gradient ascent, η = 1/ℓ_R(θ_0); curvature re-estimated along the way
        double ellS = Math.Abs(
            Curvature.TopHessianEigenvalue(model, () => pol.SftLoss(), o.PowerIterations, seed: o.Seed).Value
        );
        double ellR0 = Math.Abs(
            Curvature.TopHessianEigenvalue(model, () => pol.Objective(), o.PowerIterations, seed: o.Seed + 1).Value
        );
        double ellR = ellR0,
            eta = 1 / ellR0;
        log(
            $"landscape: θ_0 L_S {s0:F5} (floor {pol.DataEntropy:F5}), ‖∇L_S‖ {Curvature.Norm(gS0):E2}, ℓ_S {ellS:F3}, "
                + $"ℓ_R {ellR0:F3}, η {eta:F4}"
        );
        var start = pol.Misalignment();
        var thetas = new List<double[]> { theta0 };
        var sft = new List<double>();
        var obj = new List<double>();
        var rew = new List<double>();
        var gSs = new List<double[]>();
        var gJs = new List<double[]>();
        int total = o.RlSteps + o.RlTailSteps;
        for (int t = 0; t <= total; t++)
        {
            var (sv, gs) = Curvature.Gradient(model, () => pol.SftLoss());
            var (jv, gj) = Curvature.Gradient(model, () => pol.Objective());
            if (t <= o.RlSteps)
            {
                sft.Add(sv);
                obj.Add(jv);
                rew.Add(pol.Reward());
                gSs.Add(gs);
                gJs.Add(gj);
                if (t > 0 && t % o.CurvatureEvery == 0)
                {
                    ellS = Math.Max(
                        ellS,
                        Math.Abs(
                            Curvature
                                .TopHessianEigenvalue(model, () => pol.SftLoss(), o.PowerIterations, seed: o.Seed + t)
                                .Value
                        )
                    );
                    ellR = Math.Max(
                        ellR,
                        Math.Abs(
                            Curvature
                                .TopHessianEigenvalue(
                                    model,
                                    () => pol.Objective(),
                                    o.PowerIterations,
                                    seed: o.Seed + t + 1
                                )
                                .Value
                        )
                    );
                    log($"landscape rl step {t}: L_S {sv:F5}, J {jv:F5}, ℓ_S {ellS:F3}, ℓ_R {ellR:F3}");
                }
            }
            if (t == total)
            {
                obj.Add(jv);
                sft.Add(sv);
                break;
            }
            var next = Curvature.Axpy(Curvature.Get(model), gj, eta); // ascent on J
            Curvature.Set(model, next);
            if (t < o.RlSteps)
                thetas.Add(next);
        }
        double finalJ = obj[^1],
            finalS = sft[^1];
        obj.RemoveAt(obj.Count - 1);
        sft.RemoveAt(sft.Count - 1);
        Curvature.Set(model, thetas[^1]);
        var end = pol.Misalignment(); // the model stays at θ_T

        // (3) predictions against measurements, with the constants estimated above (ℓ: the largest seen on the path)
        double muR = Enumerable
            .Range(0, obj.Count)
            .Where(t => jStar - obj[t] > 1e-12)
            .Select(t => 0.5 * Curvature.Dot(gJs[t], gJs[t]) / (jStar - obj[t]))
            .DefaultIfEmpty(0)
            .Min();
        double kappa = eta * muR * (2 - ellR * eta);
        // one RL step lowers L_S whenever cos(∇J, −∇L_S) exceeds ℓ_S η ‖∇J‖ / (2‖∇L_S‖)
        (double Cos, double Needed) Condition(double[] gs, double[] gj)
        {
            double nS = Curvature.Norm(gs);
            return (
                -Curvature.Cosine(gj, gs),
                nS > 0 ? ellS * eta * Curvature.Norm(gj) / (2 * nS) : double.PositiveInfinity
            );
        }
        var steps = new List<TransformerStep>();
        int taylorV = 0,
            riseV = 0,
            contrV = 0,
            held = 0,
            heldButUp = 0,
            lowered = 0;
        double inner = 0,
            sq = 0;
        for (int t = 0; t < sft.Count; t++)
        {
            double rise = sft[t] - s0;
            double residual = rise - eta * inner,
                taylorBound = ellS * eta * eta / 2 * sq;
            if (Math.Abs(residual) > taylorBound * (1 + 1e-6) + 1e-12)
                taylorV++;
            var disp = Curvature.Axpy(thetas[t], theta0, -1);
            double riseBound = Curvature.Dot(gS0, disp) + ellS / 2 * Curvature.Dot(disp, disp);
            if (rise > riseBound * (1 + 1e-6) + 1e-12)
                riseV++;
            double gapBound = Math.Pow(1 - kappa, t) * (jStar - obj[0]);
            if (jStar - obj[t] > gapBound * (1 + 1e-6) + 1e-12)
                contrV++;
            double nS = Curvature.Norm(gSs[t]),
                nJ = Curvature.Norm(gJs[t]);
            var (cos, needed) = Condition(gSs[t], gJs[t]);
            bool suff = cos > needed;
            bool decreased = t + 1 < sft.Count && sft[t + 1] < sft[t];
            if (t + 1 < sft.Count)
            {
                if (suff)
                {
                    held++;
                    if (!decreased)
                        heldButUp++;
                }
                if (decreased)
                    lowered++;
            }
            steps.Add(
                new TransformerStep(
                    t,
                    sft[t],
                    obj[t],
                    rew[t],
                    nS,
                    nJ,
                    cos,
                    residual,
                    taylorBound,
                    riseBound,
                    gapBound,
                    suff,
                    decreased
                )
            );
            inner += Curvature.Dot(gSs[t], gJs[t]);
            sq += Curvature.Dot(gJs[t], gJs[t]);
        }
        var phi = Enumerable.Range(0, sft.Count).Select(t => obj[t] - obj[0] - o.Lambda * (sft[t] - s0)).ToList();
        int tMeasured = phi.IndexOf(phi.Max());
        double c = o.Lambda * ellS * ellR * eta * eta / Math.Pow(1 - Math.Sqrt(1 - kappa), 2);
        double tPred = kappa > 0 && kappa < 1 ? 2 * Math.Log(1 + 1 / c) / -Math.Log(1 - kappa) : double.NaN;
        // where RL ends: the tilted optimum's cross-entropy against the data, relative to θ_0's
        double predictedRise = pol.CrossEntropy(pStar) - pol.CrossEntropy(pol.Reference!);

        // the threshold: one RL step (same J, same η) from SFT snapshots far from and close to the SFT optimum
        var thetaT = Curvature.Get(model);
        var threshold = new List<ThresholdPoint>();
        foreach (var (step, th) in snapshots.Append((o.SftSteps, theta0)))
        {
            Curvature.Set(model, th);
            var (ls, gs) = Curvature.Gradient(model, () => pol.SftLoss());
            var (_, gj) = Curvature.Gradient(model, () => pol.Objective());
            Curvature.Set(model, Curvature.Axpy(th, gj, eta));
            double after;
            using (no_grad())
            using (NewDisposeScope())
                after = pol.SftLoss().item<double>();
            double nJ = Curvature.Norm(gj);
            var (cos, needed) = Condition(gs, gj);
            threshold.Add(
                new ThresholdPoint(
                    step,
                    ls - pol.DataEntropy,
                    cos,
                    needed,
                    cos > needed,
                    after < ls,
                    cos > 0 ? ellS * eta * eta * nJ * nJ / (8 * cos * cos) : double.PositiveInfinity
                )
            );
        }
        Curvature.Set(model, thetaT);
        return new TransformerLandscapeResult(
            theta0.Length,
            o.Beta,
            s0,
            pol.DataEntropy,
            Curvature.Norm(gS0),
            ellS,
            ellR,
            muR,
            eta,
            kappa,
            jStar,
            steps,
            taylorV,
            riseV,
            contrV,
            held,
            heldButUp,
            lowered,
            tMeasured,
            tPred,
            o.Lambda,
            predictedRise,
            finalS - s0,
            finalJ,
            total,
            start,
            end,
            threshold
        )
        {
            // the guarded pipeline's cadence (grpo.stop_check_steps' default)
            Stopping = StopVsTStar.Of(obj, sft, o.Lambda, tPred, 4),
        };
    }

    /// <summary>What the numbers say, in plain lines.</summary>
    public static IEnumerable<string> Describe(TransformerLandscapeResult r)
    {
        var last = r.Trajectory[^1];
        yield return $"SFT start θ_0: L_S {r.SftLossStart:F4} (floor H(p_data) {r.SftEntropyFloor:F4}), "
            + $"‖∇L_S‖ {r.SftGradNormStart:E2}; {r.Parameters:N0} parameters, float64.";
        yield return $"Constants: ℓ_S {r.EllS:F3}, ℓ_R {r.EllR:F3} (largest seen on the path), μ_R {r.MuR:E3} "
            + $"(smallest PL ratio on the path), η = 1/ℓ_R(θ_0) = {r.Eta:F4}, κ {r.Kappa:E3}.";
        yield return $"After {last.T} RL steps: L_S changed by {last.SftLoss - r.SftLossStart:+0.00000;-0.00000} "
            + $"(smoothness upper bound on the rise {last.RiseUpperBound:F5}), J went {r.Trajectory[0].Objective:F4} "
            + $"→ {last.Objective:F4} (J* {r.JStar:F4}), strict reward {r.Trajectory[0].Reward:F3} "
            + $"→ {last.Reward:F3}.";
        yield return $"Violations over the path: two-sided Taylor {r.TaylorViolations}, rise bound {r.RiseViolations}, "
            + $"PL contraction {r.ContractionViolations} (constants are estimates, so these are checks, not theorems).";
        yield return $"One-step threshold: the sufficient condition held on {r.SufficientHeld} steps "
            + $"({r.SufficientButIncreased} of them did not lower L_S); {r.StepsThatLoweredSft} of {last.T} RL steps "
            + "lowered L_S.";
        var th = r.Threshold;
        var gaps = string.Join(", ", th.Where(p => p.SftDecreased).Select(p => p.SftGap.ToString("F3")));
        yield return $"Threshold, one RL step from {th.Count} SFT snapshots: L_S fell "
            + $"from {th.Count(p => p.SftDecreased)} (SFT gaps {gaps}); the sufficient condition held "
            + $"at {th.Count(p => p.SufficientHeld)}, and L_S fell at each of them: "
            + $"{th.Where(p => p.SufficientHeld).All(p => p.SftDecreased)}; "
            + $"at θ_0 (gap {th[^1].SftGap:E1}) it needs cos > {th[^1].CosNeeded:F1}.";
        yield return $"Optimal RL duration (λ = {r.Lambda}): measured T* = {r.MeasuredTStar}, "
            + $"predicted {r.PredictedTStar:F1}.";
        if (r.Stopping is { } stop)
            yield return stop.Describe(r.Lambda);
        yield return $"Where RL ends ({r.TotalRlSteps} steps): L_S rise {r.MeasuredFinalRise:F4} against the tilted "
            + $"optimum's {r.PredictedFinalRise:F4} (Theorem 3.1 with p_0 as the reference); J {r.FinalObjective:F4} "
            + $"of J* {r.JStar:F4}.";
        yield return $"Misalignment at θ_0: cos(G_S, G_R) {r.AtStart.Cos:F4} "
            + $"(from M = J Jᵀ: {r.AtStart.CosFromGram:F4}), "
            + $"ε {r.AtStart.Epsilon:F4}, bound |cos| ≥ {r.AtStart.Bound:F4}, λ_1/tr M {r.AtStart.TopFraction:F3}; "
            + $"at θ_T: cos {r.AtEnd.Cos:F4}, ε {r.AtEnd.Epsilon:F4}, bound {r.AtEnd.Bound:F4}, "
            + $"λ_1/tr M {r.AtEnd.TopFraction:F3}.";
    }
}

/// <summary>torch.optim.Adam (no weight decay, no amsgrad) in the parameters' own dtype, float64 here, with every
/// Scalar held: TorchSharp's Adam passes implicit Scalars (β1, 1 − β1, ...) that a GC on another thread can finalize
/// while the native call reads them (seen: "Expected false to be true" in toDouble under GC stress).</summary>
sealed class FullBatchAdam(Tensor[] ps, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    : IDisposable
{
    readonly Tensor[] m = ps.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray(),
        v = ps.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray();
    long step;

    public void ZeroGrad()
    {
        foreach (var p in ps)
        {
            using var g = p.grad; // held while zero_ runs (see HeldScalars)
            g?.zero_();
        }
    }

    public void Step()
    {
        step++;
        double c1 = 1 - Math.Pow(beta1, step),
            c2 = 1 - Math.Pow(beta2, step);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using TorchSharp.Scalar b1 = beta1,
            rest1 = 1 - beta1,
            b2 = beta2,
            rest2 = 1 - beta2,
            sqrtC2 = Math.Sqrt(c2),
            epsilon = eps,
            stepSize = -(lr / c1);
        for (int i = 0; i < ps.Length; i++)
        {
            var g = ps[i].grad;
            if (g is null)
                continue;
            m[i].mul_(b1).add_(g, rest1);
            v[i].mul_(b2).addcmul_(g, g, rest2);
            var denom = (v[i].sqrt() / sqrtC2).add_(epsilon, HeldScalars.One);
            ps[i].addcdiv_(m[i], denom, stepSize);
        }
    }

    public void Dispose()
    {
        foreach (var t in m.Concat(v))
            t.Dispose();
    }
}
