"""The fixed little world the generated tasks talk about: people, things, and commonsense facts.

The world is the same for every seed (it is the model zoo's "common sense"); seeds only pick
which facts and names an example uses.
"""

NAMES = ["Anna", "Ben", "Carla", "David", "Emma", "Frank", "Grace", "Hugo", "Iris", "Jack",
         "Kate", "Liam", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor"]

# Counting domains for math problems: (singular, plural, verb for gaining, verb for losing)
COUNTABLES = {
    "fruit": [("apple", "apples"), ("orange", "oranges"), ("pear", "pears"), ("lemon", "lemons")],
    "coins": [("coin", "coins"), ("token", "tokens"), ("stamp", "stamps")],
    "books": [("book", "books"), ("comic", "comics"), ("notebook", "notebooks")],
    "marbles": [("marble", "marbles"), ("ball", "balls"), ("toy car", "toy cars")],
    "cookies": [("cookie", "cookies"), ("cake", "cakes"), ("muffin", "muffins")],
    "flowers": [("rose", "roses"), ("tulip", "tulips"), ("daisy", "daisies")],
}

# Commonsense relations: relation -> list of (subject, answer). Distractors come from the
# other answers of the same relation.
FACTS = {
    "tool_use": [("cut paper", "scissors"), ("write a letter", "pen"), ("sweep the floor", "broom"),
                 ("eat soup", "spoon"), ("hit a nail", "hammer"), ("open a door", "key"),
                 ("dig a hole", "shovel"), ("take a photo", "camera"), ("tell the time", "clock"),
                 ("boil water", "kettle"), ("dry your hair", "towel"), ("carry books", "bag")],
    "animal_sound": [("dog", "barks"), ("cat", "meows"), ("cow", "moos"), ("duck", "quacks"),
                     ("lion", "roars"), ("sheep", "bleats"), ("horse", "neighs"), ("owl", "hoots"),
                     ("snake", "hisses"), ("bee", "buzzes"), ("frog", "croaks"), ("pig", "oinks")],
    "animal_home": [("bird", "nest"), ("bee", "hive"), ("fish", "pond"), ("horse", "stable"),
                    ("rabbit", "burrow"), ("spider", "web"), ("dog", "kennel"), ("bear", "cave"),
                    ("ant", "hill"), ("pig", "sty"), ("hen", "coop"), ("fox", "den")],
    "food_color": [("banana", "yellow"), ("tomato", "red"), ("grass", "green"), ("milk", "white"),
                   ("coal", "black"), ("orange", "orange"), ("plum", "purple"), ("sky", "blue"),
                   ("chocolate", "brown"), ("lime", "green"), ("snow", "white"), ("cherry", "red")],
    "place_activity": [("library", "read"), ("kitchen", "cook"), ("pool", "swim"), ("bed", "sleep"),
                       ("school", "learn"), ("shop", "buy"), ("park", "play"), ("office", "work"),
                       ("garden", "plant"), ("gym", "exercise"), ("theatre", "watch"), ("bank", "save")],
    "weather_wear": [("rain", "umbrella"), ("snow", "boots"), ("sun", "hat"), ("cold", "coat"),
                     ("wind", "jacket"), ("heat", "shorts"), ("frost", "gloves"), ("storm", "raincoat"),
                     ("fog", "lamp"), ("ice", "skates"), ("dust", "mask"), ("night", "torch")],
}

FACT_SENTENCES = {
    "tool_use": "To {s}, people use a {a}.",
    "animal_sound": "The {s} {a}.",
    "animal_home": "A {s} lives in a {a}.",
    "food_color": "The {s} is {a}.",
    "place_activity": "At the {s}, people {a}.",
    "weather_wear": "In the {s}, people take a {a}.",
}

TEAMS = ["Lions", "Eagles", "Tigers", "Bears", "Wolves", "Sharks", "Hawks", "Foxes"]
SHOPS = ["North Shop", "River Store", "Hill Market", "Bay Stall", "Park Kiosk", "Main Bakery"]
CITIES = ["Avon", "Brook", "Cedar", "Dale", "Elm", "Fern", "Glen", "Haven"]
ARMIES = ["the red army", "the blue army", "the green army", "the grey army", "the gold army"]
PLACES = ["cafe", "park", "library", "station", "cinema", "museum", "market", "beach"]
TIMES = ["5", "6", "7", "8", "9", "10", "noon", "3"]
ITEMS = ["milk", "bread", "eggs", "rice", "tea", "cheese", "apples", "soap"]
THINGS = ["bike", "ladder", "laptop", "umbrella", "camera", "tent", "drill", "guitar"]
SUBJECTS = ["maths", "history", "science", "music", "art", "french", "biology", "physics"]
DISHES = ["soup", "pasta", "curry", "salad", "pie", "stew", "pancakes", "pizza"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
