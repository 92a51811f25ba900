from dagster import DynamicPartitionsDefinition

#: One partition per room; the key is the room id. Rooms are added by the demo, the API and
#: the event sensor.
rooms_partitions = DynamicPartitionsDefinition(name="rooms")
