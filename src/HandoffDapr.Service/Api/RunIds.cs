using System.Globalization;

namespace HandoffDapr.Service.Api;

internal static class RunIds
{
    /// <summary>Route ids are parsed here rather than by a route constraint, so a bad id is a 400 problem, not a bare 404.</summary>
    public static bool TryParse(string? value, out long id) =>
        long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out id) && Core.Model.WholeIds.IsValid(id);
}
