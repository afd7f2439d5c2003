"""The words storyworld's grammar draws from. Every list holds distinct entries, and no entry is
another entry's prefix followed by the text that can come after it, so a story's text determines
the choices that made it (tests check this on samples)."""

GIRLS = """Lily Mia Sara Emma Zoe Anna Lucy Ella Ruby Rosa Nora Maya Ivy Chloe Daisy Hazel Stella
Luna Grace Alice Clara Fiona Greta Hanna Iris Jenny Kate Lena Molly Nina Olive Penny Quinn Rita
Sophie Tessa Uma Vera Wendy Yara Amy Beth Cora Dora Eva Faye Gina Holly Ida Julia Kira Leah Mabel
Nell Opal Pia Rhea Sadie Tara Una Violet Willa Xena Abby Bella Cindy Dina Elsie Flora Gemma Heidi
Isla June Kelly Lola Mira Nadia Orla Poppy""".split()

BOYS = """Tom Ben Max Sam Leo Jack Finn Owen Noah Liam Eli Theo Oscar Hugo Felix Milo Jake Luke
Adam Carl Dan Evan Fred Gus Hank Ian Joel Kai Lars Mark Ned Otto Paul Rex Seth Tim Vic Wade Zack
Alex Bruno Colin Drew Ezra Frank George Henry Isaac Jonah Kevin Louis Miles Nate Omar Pete Ralph
Simon Toby Ulf Victor Walt Yusuf Arlo Boris Cody Dexter Emil Flynn Gabe Harry Igor Jasper Kurt
Lenny Marco Nico Oliver Percy Reed""".split()

ANIMALS = """bunny kitten puppy duck frog mouse bear fox owl squirrel hedgehog turtle lamb pig goat
cow horse pony chick hen deer raccoon otter beaver badger mole robin sparrow penguin seal whale
dolphin lion tiger elephant giraffe zebra monkey koala panda kangaroo camel hippo rhino wolf
crab snail ladybug butterfly bee ant caterpillar dragonfly parrot swan goose dragon unicorn
dinosaur
hamster gerbil ferret llama alpaca moose bison squid octopus starfish jellyfish
beetle cricket firefly pelican flamingo peacock toucan eagle hawk""".split()

HERO_ADJECTIVES = """little small tiny kind brave happy shy curious clever gentle friendly
playful silly cheerful quiet busy sleepy lucky proud careful funny helpful smart sweet bold calm
eager jolly lively merry polite honest wise young fluffy fuzzy speedy chubby cozy patient
thoughtful grumpy lonely nervous cheeky
daring dreamy fearless generous giggly graceful humble jumpy mighty modest nimble
plucky quirky sensible spunky sturdy tender witty zany""".split()

COLORS = """red blue green yellow orange purple pink brown white black golden silver gray shiny
striped spotted sparkly rainbow""".split()

OBJECTS = """ball kite hat book drum doll teddy boat car truck train robot balloon blanket
scarf shoe sock cup spoon bowl basket bucket shovel box bag bell whistle flute violin guitar
piano crayon pencil brush paint sticker puzzle block marble shell stone feather leaf flower
acorn pinecone stick rope ladder wagon bike sled umbrella lantern candle clock map key coin
ring necklace crown wand star mirror pillow tent jar bottle button ribbon
yoyo compass telescope magnet kazoo harmonica bracelet locket trophy medal scooter
skateboard helmet mitten glove backpack notebook envelope postcard photo globe lamp rocket
airplane helicopter submarine tractor bulldozer puppet kaleidoscope wheelbarrow hammock
trampoline xylophone accordion banjo snowglobe pinwheel seashell teapot""".split()

PLACES = """forest meadow garden park beach lake river pond farm village town city hill
mountain valley cave island field orchard barn castle library school playground zoo market
bakery harbor desert jungle swamp
museum station bridge lighthouse windmill greenhouse attic garage kitchen backyard
riverbank seashore treehouse campsite waterfall canyon glacier volcano""".split()

HOMES = """a little house near the woods|a cozy cottage by the sea|a big tree in the park|a red
barn on a farm|a small burrow under a hill|a blue house on a busy street|a tall tower in an old
castle|a round hut beside a river|a warm nest high in an oak|a tiny flat above a bakery|a yellow
tent at the edge of a meadow|a houseboat on a quiet lake""".replace("\n", " ").split("|")

FAMILY = """mom dad grandma grandpa aunt uncle sister brother cousin granny nana""".split()

FOODS = """apples bananas cookies cake pie bread soup carrots berries cherries grapes honey
cheese pancakes muffins sandwiches noodles pizza peas corn plums pears melons lemons nuts
popcorn jam rice eggs waffles
oranges peaches tomatoes potatoes cupcakes biscuits pretzels dumplings tacos oatmeal
yogurt watermelon coconuts blueberries strawberries raspberries""".split()

WEATHER = """sunny rainy windy snowy cloudy foggy warm chilly stormy bright
breezy misty frosty drizzly""".split()

TIMES = """morning afternoon evening day""".split()

OPENERS = ["Once upon a time", "One day", "Long ago", "In a land far away", "Not long ago",
           "Many years ago", "A while back", "Once"]

# Things a character does: each a verb phrase that can follow "liked to" / "wanted to".
ACTIVITIES = """play in the sand|build a fort|paint pictures|sing songs|read stories|jump in
puddles|climb trees|fly a kite|bake cookies|plant seeds|collect shells|count the stars|chase
butterflies|splash in the water|play hide and seek|dance in the rain|draw with chalk|ride a
bike|roll down the hill|pick flowers|feed the ducks|watch the clouds|make a snowman|play the
drum|tell jokes|look for bugs|swing on the swings|kick a ball|build sandcastles|skip
stones|play tag|go on adventures|hum little tunes|make new friends|help in the garden|play with
blocks|race to the fence|hunt for treasure|look at maps|blow bubbles""".replace("\n", " ").split("|")

FEELINGS = """happy sad scared worried excited surprised angry upset proud glad tired nervous
calm lonely grateful hopeful""".split()

HAZARDS = """a deep hole|the muddy pond|a tall tree|the rushing river|a thorny bush|a dark
cave|the high roof|a big puddle|the old well|a pile of leaves""".replace("\n", " ").split("|")

HELPERS_ACTIONS = """used a long stick|built a little ladder|tied a rope to a branch|asked a tall
giraffe for help|made a bridge of stones|pulled very hard together|called everyone in the
village|used a big net|climbed up slowly and carefully|thought of a clever plan""".replace(
    "\n", " ").split("|")

EXCLAIMS = """Oh no|Oh dear|Look|Wow|Help|Hooray|Yay|Hmm|Oops|Oh my""".split("|")

HELP_LINES = """What should I do?|Can you help me?|I need your help!|Please help me find it!|I
do not know what to do.|This is a big problem.|How will I ever get it back?|I feel so
sad.""".replace("\n", " ").split("|")

REPLIES = """Do not worry, I will help you|We can fix this together|I have an idea|Let us
look together|Everything will be fine|Come with me|I know what to do|Be brave, we can do
it""".replace("\n", " ").split("|")

ENDINGS = """and they played together until the sun went down|and they laughed all the way
home|and they shared a big snack of {food}|and they had a little party in the {place}|and they
went home feeling {feeling}|and everyone cheered|and they sang a happy song|and they promised
to always help each other""".replace("\n", " ").split("|")

MORALS = """friends help each other|sharing makes everyone happy|it is good to be brave|never
give up|kindness is always the best choice|working together makes hard things easy|it is okay
to ask for help|being honest is important|patience brings good things|every problem has an
answer""".replace("\n", " ").split("|")

SOUNDS = """sing chirp squeak buzz hoot roar growl bark meow quack honk hum whistle splash
giggle snore""".split()

ADVERBS = """softly loudly happily sadly slowly quickly gently sweetly proudly quietly
cheerfully sleepily""".split()

# Version 2's world (slm_tune/data/storyworld_world.py). Family names are a head and a tail
# (80 x 64 = 5,120, every concatenation distinct), villages likewise (16 x 16 = 256); no list shares
# an entry with another, so a name's text gives back its parts.

FAMILY_HEADS = """Ash Bar Bell Birch Black Bram Brook Cal Cold Corn Crane Dal Dun East Elder Fair Fen Fern
Fox Gold Gray Green Hal Hart Hay Hazel High Holl Kings Lang Lark Lind Long Marsh Mead Mill Moss North
Oak Pen Pine Quill Rad Raven Red Ridge Rook Rose Rush Sand Shaw Silver Sloe Snow South Stan Stone Storm
Sum Swift Thorn Tall Thistle Tod Under Vale Wald War West Whit Wild Willow Wind Winter Wolf Wood Wren
Yar York Copper""".split()

FAMILY_TAILS = """wood field brook ton by well ford ley worth more stead wick hill dale bury croft gate ham
holt hurst mere moor ridge side stone thorpe vale water win wright man son fellow bridge combe den don
fold grove hall land low mont mouth pool port rick row sey stow tree ward way lock marsh hope end cott
acre ney burn bank beck cliff""".split()

VILLAGE_HEADS = """Apple Bramble Clover Daisy Ember Frost Glimmer Honey Juniper Maple Meadow Pebble Sunny
Tulip Velvet Acorn""".split()

VILLAGE_TAILS = """ville haven glen cove shire bourne dell burgh nook fair brae crest spring hollow vale
wold""".split()

PET_NAMES = """Bix Pip Mo Dot Zip Taffy Biscuit Pebble Sprout Noodle Muffin Pickle Button Cocoa Peanut
Waffle Bean Fudge Ziggy Nugget Pudding Sunny Tiny Jojo Coco Bubbles Rascal Scout Shadow Ginger Pepper
Socks Whiskers Patches Snowball Marble Toffee Dumpling Pixie Bingo Rolo Kiwi Mango Bonbon Fizz Wiggles
Tater Sparky Gizmo Dusty Pumpkin Sherbet Truffle Jellybean Smudge Paddy Chip Boots Tuffy Buzzy Lulu
Momo Rocket Moppet""".split()

COUNTABLES = """shells stones acorns marbles berries coins stickers flowers feathers buttons pebbles
cookies crayons leaves apples ribbons""".split()

NUMBERS = """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
fifteen sixteen seventeen eighteen""".split()
