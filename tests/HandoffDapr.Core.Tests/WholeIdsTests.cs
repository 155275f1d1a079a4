using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Tests;

public sealed class WholeIdsTests
{
    [Theory]
    [InlineData(1L, true)]
    [InlineData(9_007_199_254_740_991L, true)]
    [InlineData(9_007_199_254_740_992L, false)]
    [InlineData(0L, false)]
    [InlineData(-1L, false)]
    [InlineData(null, false)]
    public void Ids_are_valid_from_1_to_2_pow_53_minus_1(long? id, bool valid) => Assert.Equal(valid, WholeIds.IsValid(id));
}
