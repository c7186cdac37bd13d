// A stop rule for GRPO that needs no hindsight (issue 14, section 3). grpo.stop_when is one of
//   "sft_loss_rise > δ"  (a budget: stop before the held-out SFT loss has risen by δ nats/token since the stage began)
//   "dJ < λ*dL_SFT"      (marginal gain: stop when the reward gained per step falls below λ times the SFT-loss rise per
//                        step; "·" works for "*", "dJ < dL_SFT" means λ = 1).
//  1. Every k = stop_check_steps steps the stage evaluates on held-out data: J = the mean held-out reward under the
//     stage's own (strict) verifier, L = eval_sft_loss in nats/token. The rule sees only the evaluations at 0, k, 2k,
//     ... so that what it decides does not depend on the other evaluation cadences of the stage.
//  2. Estimator: least-squares polynomials of degree min(2, m − 1) to ΔJ(t) and ΔL(t) (rises from step 0) over the last
//     m = min(n, 6) evaluations. A quadratic is the second-order local model of a saturating curve: its derivative at
//     the current step is the rate (dJ/dt, dL/dt, logged), and its curvature says where the rate runs out. Six points
//     average the sampling noise of the evaluations (J is a mean over ~100 sampled completions) while staying local.
//     The gradient-alignment cosine is not used: it is logged per step, but it is a direction, not a rate per step.
//  3. Prediction (logged as stop_rule/predicted_step at every check, before the rule fires): the first integer step
//     t ≥ now at which the fitted marginal gain J'(t) − λ·L'(t) is ≤ 0 (marginal), or at which the fitted rise ΔL(t)
//     exceeds δ (budget); the planned budget when that does not happen within it.
//  4. Firing: marginal, when J'(now) ≤ λ·L'(now) on at least 3 evaluations (two points give one noisy difference),
//     at this check and the stop_patience − 1 checks before it (one noisy slope below the line is not a trend);
//     budget, when the measured rise already exceeds δ, or (3+ evaluations) the fit crosses δ by the next check.
//  4b. Restore best (stop_restore_best): when the rule fires, the stage's result is the model at the evaluated step
//     ≤ the firing step with the highest measured Φ (step 0, the stage's start, included): early stopping's "load the
//     best model", using only evaluations the rule had seen. Φ there is measured on the same evaluations that chose
//     it, as the hindsight optimum's is.
//  5. Hindsight (the measure of the rule, on the same run): Φ(T) = ΔJ(T) − λ·ΔL(T) over the evaluated check steps;
//     for a budget, Φ(T) = ΔJ(T) where ΔL(T) ≤ δ and undefined elsewhere (the constrained problem the budget states).
//     The hindsight step is argmax Φ (earliest on ties); the ratio Φ(stopped)/Φ(hindsight) is undefined when
//     Φ(hindsight) ≤ 0 (RL never paid under the trade-off) or when the stopped step broke the budget.
using System.Globalization;
using System.Text.RegularExpressions;

namespace Workbook.Training;

public enum StopKind
{
    Budget,
    Marginal,
}

/// <summary>A parsed stop rule: a budget δ on the SFT-loss rise, or the marginal trade-off λ.</summary>
public sealed partial record StopRule(StopKind Kind, double Threshold, string Text)
{
    public const string Grammar =
        "\"sft_loss_rise > δ\" (stop before the held-out SFT loss rises by δ nats/token, δ >= 0) or "
        + "\"dJ < λ*dL_SFT\" (stop when the reward gained per step falls below λ times the SFT-loss rise per step, "
        + "λ >= 0; · works for *)";

    const string Number = @"([0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|\.[0-9]+(?:e[-+]?[0-9]+)?)";

    [GeneratedRegex("^sft_loss_rise>" + Number + "$")]
    private static partial Regex BudgetForm();

    [GeneratedRegex("^dj<(?:" + Number + "[*·])?dl_sft$")]
    private static partial Regex MarginalForm();

    /// <summary>Parses a rule (spaces anywhere, case-insensitive); anything else is an error naming
    /// <paramref name="option"/> and the grammar.</summary>
    public static StopRule Parse(string? text, string option)
    {
        var s = Regex.Replace(text ?? "", @"\s+", "").ToLowerInvariant();
        var b = BudgetForm().Match(s);
        if (b.Success)
            return new StopRule(StopKind.Budget, Num(b.Groups[1].Value, option, text!), text!.Trim());
        var m = MarginalForm().Match(s);
        if (m.Success)
            return new StopRule(
                StopKind.Marginal,
                m.Groups[1].Success ? Num(m.Groups[1].Value, option, text!) : 1.0,
                text!.Trim()
            );
        throw new WorkbookException($"option {option}: '{text}' is not a stop rule; expected {Grammar}");
    }

    static double Num(string s, string option, string text)
    {
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
            throw new WorkbookException($"option {option}: '{text}': {s} is not a finite number; expected {Grammar}");
        return v;
    }

    /// <summary>Φ of one evaluated step from its rises since step 0 (NaN: outside the budget).</summary>
    public double Phi(double dJ, double dL) =>
        Kind == StopKind.Marginal ? dJ - Threshold * dL
        : dL <= Threshold ? dJ
        : double.NaN;

    /// <summary>The trade-off in words, for reports.</summary>
    public string PhiText =>
        Kind == StopKind.Marginal
            ? $"Φ(T) = ΔJ(T) − {Threshold.ToString(CultureInfo.InvariantCulture)}·ΔL_SFT(T)"
            : $"Φ(T) = ΔJ(T) where ΔL_SFT(T) ≤ {Threshold.ToString(CultureInfo.InvariantCulture)} (else outside the "
                + "budget)";
}

/// <summary>One evaluation the rule sees: step within the stage, held-out reward J, held-out SFT loss L
/// (nats/token).</summary>
public readonly record struct StopEval(long Step, double J, double L);

/// <summary>What the rule concluded at one check: the fitted rates at the current step, the predicted stop step, and
/// whether it fires now.</summary>
public sealed record StopCheck(long Step, double RateJ, double RateL, long PredictedStep, bool Fire);

/// <summary>The estimator and the decision (see the file header), plus the hindsight measure.</summary>
public static class StopEstimator
{
    /// <summary>Evaluations in the fitting window.</summary>
    public const int Window = 6;

    /// <summary>Evaluations needed before a fitted (not measured) crossing may fire the rule.</summary>
    public const int MinEvaluations = 3;

    /// <summary>Least-squares polynomial y ≈ c0 + c1·u + c2·u² of degree <paramref name="degree"/> (0..2) in
    /// u.</summary>
    public static double[] Fit(IReadOnlyList<double> u, IReadOnlyList<double> y, int degree)
    {
        int p = degree + 1,
            n = u.Count;
        var a = new double[p, p + 1];
        for (int i = 0; i < n; i++)
        for (int r = 0; r < p; r++)
        {
            for (int c = 0; c < p; c++)
                a[r, c] += Math.Pow(u[i], r + c);
            a[r, p] += Math.Pow(u[i], r) * y[i];
        }
        // Gauss-Jordan with partial pivoting on the (tiny) normal equations; u is centred and scaled by the caller
        for (int c = 0; c < p; c++)
        {
            int piv = c;
            for (int r = c + 1; r < p; r++)
                if (Math.Abs(a[r, c]) > Math.Abs(a[piv, c]))
                    piv = r;
            for (int k = 0; k <= p; k++)
                (a[c, k], a[piv, k]) = (a[piv, k], a[c, k]);
            if (Math.Abs(a[c, c]) < 1e-300)
                throw new InvalidOperationException("StopEstimator.Fit: singular design (repeated steps)");
            for (int r = 0; r < p; r++)
            {
                if (r == c)
                    continue;
                double f = a[r, c] / a[c, c];
                for (int k = c; k <= p; k++)
                    a[r, k] -= f * a[c, k];
            }
        }
        return Enumerable.Range(0, p).Select(r => a[r, p] / a[r, r]).ToArray();
    }

    /// <summary>The rule's check at the last of <paramref name="evals"/> (steps 0, k, 2k, ..., ascending); a marginal
    /// rule fires only when its condition also held at the <paramref name="patience"/> − 1 checks before.</summary>
    public static StopCheck Check(StopRule rule, IReadOnlyList<StopEval> evals, long planned, int k, int patience)
    {
        var c = Check(rule, evals, planned, k);
        if (!c.Fire || rule.Kind != StopKind.Marginal || patience <= 1)
            return c;
        for (int back = 1; back < patience; back++)
            if (evals.Count - back < 2 || !Check(rule, evals.Take(evals.Count - back).ToList(), planned, k).Fire)
                return c with { Fire = false };
        return c;
    }

    /// <summary>The evaluated step ≤ <paramref name="firing"/> with the highest Φ (earliest on ties; step 0, Φ = 0,
    /// included): the model stop_restore_best keeps.</summary>
    public static long BestStep(StopRule rule, IReadOnlyList<StopEval> evals, long firing)
    {
        var e0 = evals[0];
        long best = e0.Step;
        double bestPhi = 0;
        foreach (var e in evals.Where(e => e.Step <= firing))
            if (rule.Phi(e.J - e0.J, e.L - e0.L) is var phi && phi > bestPhi)
                (best, bestPhi) = (e.Step, phi);
        return best;
    }

    /// <summary>The rule's check at the last of <paramref name="evals"/> with no patience.</summary>
    public static StopCheck Check(StopRule rule, IReadOnlyList<StopEval> evals, long planned, int k)
    {
        var now = evals[^1];
        int n = evals.Count;
        if (n < 2)
            return new StopCheck(now.Step, double.NaN, double.NaN, planned, false);
        var w = evals.Skip(Math.Max(0, n - Window)).ToList();
        int degree = Math.Min(2, w.Count - 1);
        // u = (t − now)/k: centred on the current step, one unit per check
        var u = w.Select(e => (e.Step - now.Step) / (double)k).ToList();
        var cj = Fit(u, w.Select(e => e.J - evals[0].J).ToList(), degree);
        var cl = Fit(u, w.Select(e => e.L - evals[0].L).ToList(), degree);
        double Value(double[] c, double x) => c[0] + c[1] * x + (c.Length > 2 ? c[2] * x * x : 0);
        double Slope(double[] c, double x) => (c[1] + (c.Length > 2 ? 2 * c[2] * x : 0)) / k; // per step
        double rateJ = Slope(cj, 0),
            rateL = Slope(cl, 0);
        long predicted = planned;
        bool crosses = false;
        for (long t = now.Step; t <= planned; t++)
        {
            double x = (t - now.Step) / (double)k;
            bool crossed =
                rule.Kind == StopKind.Marginal
                    ? Slope(cj, x) - rule.Threshold * Slope(cl, x) <= 0
                    : Value(cl, x) > rule.Threshold;
            if (crossed)
            {
                (predicted, crosses) = (t, true);
                break;
            }
        }
        bool fire =
            rule.Kind == StopKind.Marginal
                ? n >= MinEvaluations && rateJ - rule.Threshold * rateL <= 0
                : now.L - evals[0].L > rule.Threshold || (n >= MinEvaluations && crosses && predicted <= now.Step + k);
        return new StopCheck(now.Step, rateJ, rateL, predicted, fire);
    }

    /// <summary>The step at which the rule, replayed over a finished trajectory, fires; null when it never
    /// does.</summary>
    public static long? FiringStep(
        StopRule rule,
        IReadOnlyList<StopEval> evals,
        long planned,
        int k,
        int patience = 1
    ) => Replay(rule, evals, planned, k, patience) is { Count: > 0 } checks && checks[^1].Fire ? checks[^1].Step : null;

    /// <summary>Runs the rule over a finished trajectory: the checks in order up to and including the one that fired.
    /// <paramref name="evals"/> are the evaluations at multiples of k (and step 0).</summary>
    public static List<StopCheck> Replay(
        StopRule rule,
        IReadOnlyList<StopEval> evals,
        long planned,
        int k,
        int patience = 1
    )
    {
        var checks = new List<StopCheck>();
        for (int i = 1; i < evals.Count; i++)
        {
            var c = Check(rule, evals.Take(i + 1).ToList(), planned, k, patience);
            checks.Add(c);
            if (c.Fire)
                break;
        }
        return checks;
    }
}

/// <summary>The stop rule against hindsight on one run: Φ over its evaluated steps, the argmax and the ratio.</summary>
public sealed record StopHindsight(
    long StoppedAt,
    long HindsightStep,
    double PhiStopped,
    double PhiHindsight,
    double? Ratio,
    IReadOnlyList<(long Step, double Phi)> Curve
)
{
    /// <summary><paramref name="evals"/>: the run's evaluations (step 0 first) at the steps where it could have
    /// stopped;
    /// <paramref name="stoppedAt"/> must be one of them.</summary>
    public static StopHindsight Of(StopRule rule, IReadOnlyList<StopEval> evals, long stoppedAt)
    {
        var e0 = evals[0];
        var curve = evals.Select(e => (e.Step, rule.Phi(e.J - e0.J, e.L - e0.L))).ToList();
        var feasible = curve.Where(c => !double.IsNaN(c.Item2)).ToList();
        var best = feasible.Aggregate((a, b) => b.Item2 > a.Item2 ? b : a); // step 0 is always feasible (Φ = 0)
        var at = curve.Where(c => c.Step == stoppedAt).ToList();
        if (at.Count == 0)
            throw new WorkbookException($"stop rule: no evaluation at the stopping step {stoppedAt}");
        double phiStop = at[0].Item2;
        double? ratio = best.Item2 > 0 && !double.IsNaN(phiStop) ? phiStop / best.Item2 : null;
        return new StopHindsight(stoppedAt, best.Step, phiStop, best.Item2, ratio, curve);
    }
}

/// <summary>The stop rule scored on fresh prompts it never saw (the guarded pipeline's confirm evaluations): Φ over
/// them (rises from their own step 0) at the kept step and at two controls' steps, each as a share of the best Φ on
/// those prompts. The controls: the step hindsight picks on the rule's own prompts over the whole budget, and the
/// budget's last step (no rule). The best is still a max over noisy points, so every ratio is conservative alike.
/// A ratio is null when Φ never rose on the fresh prompts (or its step broke a budget).</summary>
public sealed record StopConfirm(long BestStep, double PhiBest, double? Kept, double? Hindsight, double? FullBudget)
{
    /// <returns>null when there are no fresh-prompt evaluations, or none at a step the ratios need</returns>
    public static StopConfirm? Of(StopRule rule, IReadOnlyList<StopEval> confirm, long kept, long hindsight)
    {
        if (confirm.Count == 0 || confirm[0].Step != 0 || !confirm.Any(e => e.Step == kept))
            return null;
        // Φ and its best over the fresh prompts, as hindsight computes them over the rule's own
        var h = StopHindsight.Of(rule, confirm, kept);
        var phi = h.Curve.ToDictionary(c => c.Step, c => c.Phi);
        if (!phi.ContainsKey(hindsight))
            return null;
        double? Share(long step) => h.PhiHindsight > 0 && !double.IsNaN(phi[step]) ? phi[step] / h.PhiHindsight : null;
        return new StopConfirm(h.HindsightStep, h.PhiHindsight, h.Ratio, Share(hindsight), Share(confirm[^1].Step))
        {
            Curve = h.Curve,
        };
    }

    /// <summary>Φ on the fresh prompts at each evaluated step (NaN outside a budget).</summary>
    public IReadOnlyList<(long Step, double Phi)> Curve { get; init; } = [];

    /// <summary>The issue's ratio Φ(kept)/Φ(hindsight step), both measured on the fresh prompts (null when Φ at the
    /// hindsight step did not rise there).</summary>
    public double? KeptOverHindsight => Kept is { } k && Hindsight is { } h && h > 0 ? k / h : null;
}
