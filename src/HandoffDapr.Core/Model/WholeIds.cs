namespace HandoffDapr.Core.Model;

/// <summary>
/// Run, group, organization, project and integration ids: positive whole numbers up to 2^53 − 1. daprd reads actor
/// state into float64 on its way to the store, so a larger id would come back rounded, or no longer fit a long.
/// </summary>
public static class WholeIds
{
    public const long Max = 9_007_199_254_740_991;

    public static bool IsValid(long? id) => id is > 0 and <= Max;
}
