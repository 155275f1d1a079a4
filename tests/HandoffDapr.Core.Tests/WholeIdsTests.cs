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

    [Theory]
    [InlineData("042")]
    [InlineData("+42")]
    [InlineData(" 42")]
    [InlineData("42 ")]
    [InlineData("-42")]
    [InlineData("0")]
    [InlineData("00")]
    [InlineData("9007199254740992")]
    [InlineData("")]
    [InlineData(null)]
    public void Id_text_other_than_the_canonical_one_does_not_parse(string? text) => Assert.False(WholeIds.TryParseCanonical(text, out _));

    [Fact]
    public void Canonical_id_text_parses_to_its_id()
    {
        Assert.True(WholeIds.TryParseCanonical("42", out var id));
        Assert.Equal(42, id);
        Assert.True(WholeIds.TryParseCanonical("9007199254740991", out id));
        Assert.Equal(WholeIds.Max, id);
    }
}
