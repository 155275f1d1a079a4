using System.Text;
using System.Text.Json;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

public sealed class JsonElementsTests
{
    [Theory]
    [InlineData("""{"p":"ok"}""", "ok")]
    [InlineData("""{"p":"\ud800"}""", null)]
    [InlineData("""{"p":1}""", null)]
    [InlineData("""{}""", null)]
    [InlineData("""{"\ud800":1,"p":"ok"}""", "ok")]
    [InlineData("""{"p":"ok","\ud800":1}""", null)]
    public void Property_read_from_an_element_is_null_unless_it_is_a_valid_string(string json, string? expected)
    {
        using var document = JsonDocument.Parse(json);

        Assert.Equal(expected, JsonElements.String(document.RootElement, "p"));
    }

    [Theory]
    [InlineData("\"ok\"", "ok")]
    [InlineData("\"\\ud800\"", null)]
    [InlineData("\"\\udfff\\ud800\"", null)]
    [InlineData("1", null)]
    [InlineData("null", null)]
    [InlineData("{}", null)]
    public void Token_read_from_a_reader_is_null_unless_it_is_a_valid_string(string json, string? expected)
    {
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(json));
        reader.Read();

        Assert.Equal(expected, JsonElements.String(ref reader));
    }

    [Theory]
    [InlineData("""{"p":7}""", 7L)]
    [InlineData("""{"p":7,"\udc00":1}""", null)]
    [InlineData("""{"p":1e3}""", null)]
    [InlineData("""{"p":"7"}""", null)]
    public void Number_read_from_an_element_is_null_unless_it_is_a_whole_number_that_can_be_found(string json, long? expected)
    {
        using var document = JsonDocument.Parse(json);

        Assert.Equal(expected, JsonElements.Int64(document.RootElement, "p"));
    }

    [Theory]
    [InlineData("""{"status":"RUNNING","STATUS":"FINISHED"}""", true)]
    [InlineData("""{"more":{"prUrl":"a","PrUrl":"b"}}""", true)]
    [InlineData("""{"more":[{"id":1},{"id":2,"ID":3}]}""", true)]
    [InlineData("""[{"id":1,"Id":2}]""", true)]
    [InlineData("""{"id":1,"more":{"id":2},"list":[{"id":3},{"id":4}]}""", false)]
    [InlineData("""{"\ud800":1,"\udc00":2}""", false)]
    public void Property_named_twice_in_any_case_is_found_in_nested_objects_and_arrays(string json, bool namedTwice)
    {
        // The same name in another object (a nested one, an array's next item) is no repeat.
        using var document = JsonDocument.Parse(json);

        Assert.Equal(namedTwice, JsonElements.NamesAPropertyTwiceInAnyCase(document.RootElement));
    }
}
